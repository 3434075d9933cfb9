/**
 * asn1js.fromBER for bytes from outside. asn1js reports most malformed input with offset -1, but some (a BMPString
 * or UniversalString whose length is not a multiple of 2 or 4, found by random input) make it throw a RangeError
 * instead; every caller wants one answer for "not BER", so this gives undefined for both.
 */
import * as asn1js from 'asn1js';

export interface BerValue {
  result: asn1js.AsnType;
  /** Where the first value's encoding ends: less than the input's length when bytes follow it. */
  offset: number;
}

export function readBer(bytes: ArrayBuffer | Uint8Array): BerValue | undefined {
  let parsed: ReturnType<typeof asn1js.fromBER>;
  try {
    parsed = asn1js.fromBER(bytes);
  } catch {
    return undefined;
  }
  if (parsed.offset === -1 || parsed.result.error) return undefined;
  return parsed;
}
