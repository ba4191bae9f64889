// @bucketmap/client: the Node.js/TypeScript client of bucketmap
// (docs/client-node.md).
export * from './model';
export * from './errors';
export { Client, ClientOptions, ChangeEvent, MappingView } from './client';
export { HandoffEnd, HandoffStatus, TeamHandoff, isOpenPhase } from './handoffs';
export { Mapping, Target } from './mapping';
export { PlacementTable, PlacementMember, SLOT_COUNT, mix64, mix64Big, teamSlot } from './placement';
export { ClientRole, HandoffPhase } from './proto';
export { encodeCacheFile, decodeCacheFile, CacheContents } from './cache_file';
export { Logger, defaultLogger, silentLogger } from './log';
export { WatchConnection, WatchConnectionOptions, WatchTlsOptions, channelCredentials } from './watch';
export { DeliveryTracker, Ticket } from './delivery_tracker';
export { HandoffGate, GateDecision, GateReason, VERSION_HEADER, parseVersionHeader } from './gate';
export { KafkaPartitionHold, PausableConsumer, HeldMessage, Admission, HoldStats, versionHeaders, stampedVersion } from './kafka';
export { LoadReporter, LoadReporterOptions, LoadReportMsg } from './load_report';
