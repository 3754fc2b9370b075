# Independent DKIM verification with dkimpy (Debian's python3-dkim), keys looked up over DNS in the
# test DNS server. Reads a message on stdin; prints one JSON line with a result per DKIM-Signature.
# Usage: verify_dkim.py DNS_HOST DNS_PORT
import json
import sys

import dkim
import dns.exception
import dns.resolver


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    lookups = []

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode('ascii')
        lookups.append(name.rstrip('.'))
        try:
            answer = resolver.resolve(name, 'TXT', lifetime=timeout)
        except dns.exception.DNSException:
            # No such record, or a name that is not one (a garbage d= or s= of someone else's
            # signature): no key, and that signature fails, not the whole run.
            return None
        # A record longer than 255 bytes comes as several character-strings of one TXT record.
        return b''.join(next(iter(answer)).strings)

    message = sys.stdin.buffer.read()
    verifier = dkim.DKIM(message, minkey=1024)
    count = len([1 for name, _ in verifier.headers if name.lower() == b'dkim-signature'])
    results = []
    for idx in range(count):
        entry = {'index': idx}
        try:
            entry['valid'] = bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException as error:
            entry['valid'] = False
            entry['error'] = '%s: %s' % (type(error).__name__, error)
        entry['domain'] = (verifier.domain or b'').decode('ascii', 'replace')
        entry['selector'] = (verifier.selector or b'').decode('ascii', 'replace')
        algorithm = (getattr(verifier, 'signature_fields', None) or {}).get(b'a')
        entry['algorithm'] = algorithm.decode('ascii') if isinstance(algorithm, bytes) else None
        results.append(entry)
    print(json.dumps({'dkimpy': dkim.__file__, 'signatures': results, 'lookups': lookups}))


if __name__ == '__main__':
    main()
