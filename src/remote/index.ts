/** Expert parallelism over NATS: expert servers, the RemoteExperts expert source, the binary wire format. */
export { RemoteExperts, RemoteExpertError, type RemoteExpertsOptions, type RemoteExpertsStats, type RemoteExpertCounters, type RemoteFailurePolicy, type DiscoveryReport } from './remote-experts.js';
export { ExpertServer, type ExpertServerOptions, type ExpertServerStats } from './expert-server.js';
export { ProtocolError, encodeMessage, decodeMessage, messageBytes, encodeBatch, decodeBatch, batchBytes, isBatchFrame, type ExpertMessage, type BatchMessage, type BatchBlock, type ProtocolLimits } from './protocol.js';
export { parseExpertSpec, formatExpertSet, expertCount, defaultModelId, expertSubject, directSubject, statsSubject, SERVICE_NAME, QUEUE_GROUP, type ExpertSet } from './spec.js';
export type { InstanceInfo } from './nats-worker.js';
