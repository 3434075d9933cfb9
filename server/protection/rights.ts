/**
 * Usage rights of protected mail (the names of Azure RMS's usage rights, in camelCase) and which one an action
 * needs. The server enforces `view`, `reply`, `replyAll`, `forward` and `export`; `extract` (copy text) and `print`
 * can only be honoured by the app, which is told of them in `rights` and trusted to (an app that registered the
 * `rightsManagement` capability promises exactly that).
 */
export const RIGHTS = ['view', 'reply', 'replyAll', 'forward', 'extract', 'print', 'export'] as const;
export type Right = (typeof RIGHTS)[number];

/** Who a protected message was addressed to and by, as the use licence and the item know it. */
export interface OriginalParties {
  from: string | null;
  replyTo: string[];
  to: string[];
  cc: string[];
}

const lower = (a: string) => a.trim().toLowerCase();

/**
 * The right a message that quotes or answers a protected original needs, by whom it goes to:
 * - only to the original's sender (or its Reply-To): `reply`;
 * - only to people who already had the original (sender, To, Cc): `replyAll`;
 * - to anyone else: `forward` (the content would reach someone the owner never addressed).
 * The sender's own address never widens the audience.
 */
export function rightForAnswer(original: OriginalParties, recipients: string[], self: string): Right {
  const me = lower(self);
  const targets = [...new Set(recipients.map(lower))].filter((a) => a !== me);
  const replyAudience = new Set([...(original.from ? [original.from] : []), ...original.replyTo].map(lower));
  if (targets.every((a) => replyAudience.has(a))) return 'reply';
  const everyone = new Set([...replyAudience, ...original.to.map(lower), ...original.cc.map(lower)]);
  if (targets.every((a) => everyone.has(a))) return 'replyAll';
  return 'forward';
}

/** A right implies the weaker ones an app expects with it (replying to all includes replying to the sender). */
export function holds(granted: readonly Right[], right: Right): boolean {
  if (granted.includes(right)) return true;
  return right === 'reply' && granted.includes('replyAll');
}
