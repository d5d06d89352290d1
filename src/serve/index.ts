/** Serving: experts on disk behind a byte-budgeted LRU (ExpertStore), model loading for serving, the engine and the HTTP server. */
export { ExpertStore, ExpertLoadError, type ExpertStoreOptions, type ExpertStoreStats, type ExpertLayerStats, type TensorLocation } from './expert-store.js';
export { parseByteBudget, resolveByteBudget, formatBytes, type ByteBudgetSpec } from './bytes.js';
export { loadServingModel, type LoadServingModelOptions, type ServingModel } from './model-loader.js';
export { Engine, QueueFullError, ShuttingDownError, AbortedError, type GenerateRequest, type GenerateResult } from './engine.js';
export { createServer, type ServerOptions, type SwitchyardServer } from './server.js';
export { renderChat, CHAT_STOPS } from './openai.js';
export { writeRandomCheckpoint, type RandomCheckpointOptions } from './fixture.js';
