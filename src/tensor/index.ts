export { Tensor, type DType, type TensorData, type TensorOptions, type RandomOptions, type IndexLike } from './tensor.js';
export { noGrad, enableGrad, isGradEnabled, setAnomalyDetection, isAnomalyDetectionEnabled, recycleGrad, leafGradSink, pendingGradSink } from './autodiff.js';
export { sizeOf, broadcastShapes } from './shape.js';
