// @tern/testkit: the real parts other packages' tests run against.
export {
  type IssuedCertificate,
  type IssueOptions,
  makeCertificate,
  makeCertificateAuthority,
  type TestCertificate,
  type TestCertificateAuthority,
} from './certificate.js';
export {
  type DnsQuery,
  type DnsRecordSet,
  type DnsRecords,
  reverseName,
  startDnsServer,
  type TestDns,
} from './dns.js';
export {
  dnssecAvailable,
  startSignedZones,
  startValidatingResolver,
  type TestAuthority,
  type TestResolver,
  type TestZone,
  type TlsaRecordData,
  type ZoneRecordSet,
} from './dnssec.js';
export {
  asIntakeHandsIt,
  FuzzDeadlineExceeded,
  type FuzzMessageOptions,
  fuzzMessage,
  fuzzRounds,
  fuzzSeeds,
  mutate,
  Random,
  retainedMemory,
  split,
  withinDeadline,
} from './fuzz.js';
export {
  type PackedPackage,
  type PublicPackage,
  packPublicPackages,
  publicPackages,
  tarballProblems,
} from './packages.js';
export {
  type MtaStsServer,
  type MtaStsServerOptions,
  type PolicyRequest,
  type PolicyResponse,
  startMtaStsServer,
} from './policy-server.js';
export { freePort } from './port.js';
export {
  cloneForReadme,
  type FollowedReadme,
  type FollowReadmeOptions,
  followReadme,
  followReadmeInClone,
  type ReadmeClone,
  type ReadmeCommand,
  type ReadmeRule,
  type ReadmeServer,
  type ReadmeStep,
  type ReadmeTrial,
  readmeCommands,
} from './readme.js';
export {
  redisAvailable,
  startRedis,
  startRedisCluster,
  startRedisSentinel,
  type TestRedis,
  type TestRedisCluster,
  type TestRedisOptions,
  type TestRedisSentinel,
  type TestRedisSentinelOptions,
} from './redis.js';
export { type RunOptions, type RunResult, run, swaks } from './run.js';
export { type RawSmtp, type SmtpDialogOptions, smtpDialog } from './smtp-dialog.js';
export {
  type DataReplyFn,
  type RcptReplyFn,
  type SinkMessage,
  type SinkReply,
  type SmtpSink,
  type SmtpSinkOptions,
  startSmtpSink,
} from './smtp-sink.js';
export { waitFor } from './wait.js';
