// The shipped bounce rules, in the order they are tried: what the large providers say (their texts
// are more precise than their codes), then the enhanced codes that mean one thing (RFC 3463 and the
// IANA registry), then common texts, then the enhanced codes that only name a subject. A reply no
// rule knows is `transient` (4xx) or `unknown` (5xx). Operators' rules (config `bounces.rules`)
// come before all of these.
import type { BounceRule } from './bounce-classifier.js';

/** Gmail points every reply at a help page whose `p=` parameter names the cause. */
function gmail(page: string, category: BounceRule['category']): BounceRule {
  return {
    name: 'gmail',
    category,
    text: new RegExp(`support\\.google\\.com/mail/\\S*[?&]p=(?:${page})\\b`, 'i'),
  };
}

const PROVIDERS: readonly BounceRule[] = [
  // Gmail / Google Workspace.
  gmail('NoSuchUser', 'bad-mailbox'),
  gmail('DisabledUser', 'inactive'),
  gmail('OverQuotaPerm|OverQuotaTemp', 'quota'),
  gmail('Unsolicited\\w*|BlockedSender|SenderReputation', 'spam-block'),
  gmail('BlockedMessage|MessageRejected|MessageTooLarge', 'content'),
  gmail(
    'SenderAuthentication|UnauthenticatedEmail|IPv6AuthError|DmarcRejection|InvalidSecondaryMX',
    'policy',
  ),
  gmail('ReceivingRate\\w*|RcptRateLimit|TooManyRecipients', 'transient'),
  // Microsoft (Outlook.com, Exchange Online).
  { name: 'microsoft', category: 'bad-mailbox', text: /RESOLVER\.ADR\.Recip(?:ient)?NotFound/ },
  // Directory-based edge blocking: the tenant does not know the address.
  {
    name: 'microsoft',
    category: 'bad-mailbox',
    enhanced: 'x.4.1',
    text: /Recipient address rejected: Access denied/,
  },
  // Outlook.com answers an unknown consumer address with this stock text and 5.5.0.
  { name: 'microsoft', category: 'bad-mailbox', enhanced: 'x.5.0', text: /mailbox unavailable/ },
  {
    name: 'microsoft',
    category: 'inactive',
    text: /RESOLVER\.ADR\.(?:Disabled|Inactive)|mailbox (?:is )?disabled/,
  },
  {
    name: 'microsoft',
    category: 'quota',
    text: /STOREDRV\.Deliver.*(?:quota|full)|RESOLVER\.ADR\.ExceededQuota/,
  },
  { name: 'microsoft', category: 'transient', text: /Server busy\. Please try again later/ },
  {
    name: 'microsoft',
    category: 'spam-block',
    text: /on our block list|banned sending IP|traffic not accepted from this IP|rate limited due to IP reputation|\(S3\d{3}\)/,
  },
  { name: 'microsoft', category: 'policy', text: /RESOLVER\.RST\.(?:NotAuthorized|AuthRequired)/ },
  // Yahoo and AOL.
  { name: 'yahoo', category: 'bad-mailbox', text: /doesn't have an? \S+ account/ },
  { name: 'yahoo', category: 'inactive', text: /\(554\.30\)/ },
  // [TSS04], [TS03], [GL01]...: volume, complaints or reputation.
  { name: 'yahoo', category: 'spam-block', text: /\[(?:TSS?\d\d|GL\d\d)\]/ },
  { name: 'yahoo', category: 'content', text: /\[(?:PH|CS)\d\d\]/ },
];

/** Enhanced codes with one meaning, whatever the text says. */
const ENHANCED: readonly BounceRule[] = [
  ['x.1.1', 'bad-mailbox'], // bad destination mailbox address
  ['x.1.3', 'bad-mailbox'], // bad destination mailbox address syntax
  ['x.1.4', 'bad-mailbox'], // ambiguous destination mailbox
  ['x.1.6', 'inactive'], // destination mailbox has moved
  ['x.1.2', 'dns'], // bad destination system address (no such domain)
  ['x.1.10', 'dns'], // null MX (RFC 7505)
  ['x.1.7', 'policy'], // bad sender's mailbox address syntax
  ['x.1.8', 'policy'], // bad sender's system address
  ['x.2.1', 'inactive'], // mailbox disabled
  ['x.2.2', 'quota'], // mailbox full
  ['x.2.3', 'content'], // message length exceeds administrative limit
  ['x.2.4', 'routing'], // mailing list expansion problem
  ['x.3.4', 'content'], // message too big for system
  ['x.3.5', 'routing'], // system incorrectly configured
  ['x.4.1', 'transient'], // no answer from host
  ['x.4.2', 'transient'], // bad connection
  ['x.4.3', 'dns'], // directory server failure
  ['x.4.4', 'routing'], // unable to route
  ['x.4.6', 'routing'], // routing loop detected
  ['x.6.x', 'content'], // message content or media status
  ['x.7.13', 'inactive'], // user account disabled
  ['x.7.17', 'inactive'], // RRVS: mailbox owner has changed
  ['x.7.18', 'inactive'], // RRVS: domain owner has changed
  ['x.7.10', 'policy'], // encryption needed
  ['x.7.11', 'policy'], // encryption required for requested authentication mechanism
  ['x.7.20', 'policy'], // no passing DKIM signature
  ['x.7.21', 'policy'], // no acceptable DKIM signature
  ['x.7.22', 'policy'], // no valid author-matched DKIM signature
  ['x.7.23', 'policy'], // SPF validation failed
  ['x.7.24', 'policy'], // SPF validation error
  ['x.7.25', 'policy'], // reverse DNS validation failed
  ['x.7.26', 'policy'], // multiple authentication checks failed (DMARC)
  ['x.7.27', 'policy'], // our sender address has a null MX
].map(([enhanced, category]) => ({ name: 'rfc3463', enhanced, category }) as BounceRule);

/** Texts common to many servers, for replies whose enhanced code says little (x.0.0, x.7.1). */
const TEXTS: readonly BounceRule[] = [
  { name: 'text', category: 'transient', text: /greylist|graylist/ },
  // About our sender, not the recipient: before the texts that would read it as the recipient's.
  {
    name: 'text',
    category: 'policy',
    text: /sender (?:address )?(?:rejected|denied|verify failed|unknown)|sender domain/,
  },
  // Authentication (SPF, DKIM, DMARC, reverse DNS): also before the texts that would see "blocked".
  { name: 'text', category: 'policy', text: /dmarc|\bspf\b|dkim|authenticat|reverse dns|\bptr\b|rdns/ },
  {
    name: 'text',
    category: 'dns',
    text: /host (?:or domain name )?not found|domain not found|name service error|nxdomain|no mx (?:record|host)|unrouteable (?:mail )?domain/,
  },
  {
    name: 'text',
    category: 'quota',
    text: /(?:mailbox|inbox|account|storage|disk|user|recipient)\b.{0,30}\b(?:full\b|over ?quota|exceed(?:s|ed)? (?:its |the )?(?:quota|storage))|quota exceeded|insufficient (?:system )?storage/,
  },
  {
    name: 'text',
    category: 'inactive',
    text: /(?:account|mailbox|user|address)\b.{0,30}\b(?:disabled|inactive|deactivated|suspended|expired|closed|no longer (?:active|in use|valid|available))|(?:disabled|inactive|deactivated|suspended) (?:account|mailbox|user)/,
  },
  {
    name: 'text',
    category: 'bad-mailbox',
    text: /user unknown|unknown (?:user|recipient|mailbox|address)|no such (?:user|mailbox|recipient|account|address)|(?:user|mailbox|recipient|account|address)\b.{0,30}\b(?:does not|doesn't|did not) exist|(?:user|mailbox|recipient|account|address) not found|(?:invalid|bad) (?:recipient|mailbox|user|address)|unrouteable address|not a valid (?:user|mailbox|recipient)|no mailbox here|undeliverable address|unknown or illegal alias/,
  },
  {
    name: 'text',
    category: 'content',
    text: /virus|malware|infected|phish|attachment|prohibited file|file type|content (?:filter|rejected)|message content|(?:message|content|mail)\b.{0,30}\b(?:as|is|like|considered(?: as)?) spam|spam (?:score|content|detected)|\buribl\b|\bsurbl\b/,
  },
  {
    name: 'text',
    category: 'spam-block',
    text: /spamhaus|barracuda|spamcop|sorbs|\brbl\b|dnsbl|block ?list|black ?list|deny ?list|listed (?:at|in|on|by)|blocked|reputation|unsolicited|bulk mail|junk|spam/,
  },
  {
    name: 'text',
    category: 'routing',
    text: /relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|not permitted to relay|relay not permitted/,
  },
  {
    name: 'text',
    category: 'policy',
    text: /tls (?:is )?required|starttls|policy/,
  },
  // Last of the texts: a reply that also names a block or a policy is better sorted by that.
  {
    name: 'text',
    category: 'transient',
    text: /try (?:again )?later|temporar(?:y|ily)|throttl|rate limit|too many (?:connections|messages|concurrent)/,
  },
];

/** Enhanced codes that only name a subject, tried after the texts. */
const SUBJECTS: readonly BounceRule[] = [
  { name: 'rfc3463', enhanced: 'x.1.x', category: 'bad-mailbox' },
  { name: 'rfc3463', enhanced: 'x.4.x', category: 'routing' },
  { name: 'rfc3463', enhanced: 'x.7.x', category: 'policy' },
];

export const SHIPPED_BOUNCE_RULES: readonly BounceRule[] = [...PROVIDERS, ...ENHANCED, ...TEXTS, ...SUBJECTS];
