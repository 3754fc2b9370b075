// What several runner tests hand the hooks: one SMTP session as core describes it.
import type { SessionInfo } from '../src/index.js';

export const session: SessionInfo = {
  id: 's1',
  listener: { name: 'mx', kind: 'mx', hostname: 'mx.test', port: 25 },
  remoteAddress: '192.0.2.9',
  remotePort: 1234,
  localAddress: '127.0.0.1',
  localPort: 25,
  trusted: false,
  startedAt: 0,
  helo: undefined,
  tls: undefined,
  user: undefined,
};
