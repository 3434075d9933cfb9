/**
 * The trace fields a delivering server prepends (RFC 5321 §4.4): `Return-Path` with the envelope sender, and a
 * `Received` line naming the client, this server, the protocol, the transaction and, for a single recipient, who
 * it was for. Everything in them comes from the client, so it is reduced to characters that cannot break the
 * header block.
 */

export interface TraceInput {
  /** The envelope sender; empty for the null sender `<>` (bounces). */
  mailFrom: string;
  recipients: string[];
  /** The name the client gave in LHLO. */
  clientName: string;
  clientAddress: string;
  /** This server's name in mail (PIGEON_MAIL_HOSTNAME). */
  hostname: string;
  transactionId: string;
  at: Date;
}

/** A domain or address literal as the client claimed it: no spaces, parentheses or line breaks survive. */
function domainToken(text: string): string {
  const cleaned = text.replace(/[^A-Za-z0-9.:\-[\]_]/g, '').slice(0, 255);
  return cleaned || 'unknown';
}

/** An address as smtp-server accepted it; anything that could end the angle brackets or the line goes. */
function addressToken(text: string): string {
  return text.replace(/[\s<>()\\"]/g, '').slice(0, 320);
}

/** RFC 5322 date-time with a numeric zone (`GMT` is obsolete syntax there). */
export function rfc5322Date(at: Date): string {
  return at.toUTCString().replace(/GMT$/, '+0000');
}

/** The header lines to put in front of the message, CRLF-terminated. */
export function traceHeaders(input: TraceInput): Buffer {
  const address = input.clientAddress.replace(/^::ffff:/, '');
  const literal = address.includes(':') ? `[IPv6:${address}]` : `[${address}]`;
  const received = [
    `Received: from ${domainToken(input.clientName)} (${domainToken(literal)})`,
    `\tby ${domainToken(input.hostname)} (Pigeon) with LMTP id ${domainToken(input.transactionId)}`,
    ...(input.recipients.length === 1 ? [`\tfor <${addressToken(input.recipients[0]!)}>`] : []),
  ];
  received[received.length - 1] += `; ${rfc5322Date(input.at)}`;
  return Buffer.from([`Return-Path: <${addressToken(input.mailFrom)}>`, ...received, ''].join('\r\n'), 'utf8');
}
