/**
 * Request validation with zod: every bad field becomes one `{field, message}` entry of a 400 invalidRequest, so a
 * client learns everything wrong with its request at once.
 */
import { z } from 'zod';
import { errors } from '../errors';

export function parse<T extends z.ZodType>(schema: T, input: unknown, what = 'request body'): z.infer<T> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const fieldErrors = result.error.issues.map((i) => ({
    field: i.path.length ? i.path.join('.') : '(root)',
    message: i.message,
  }));
  throw errors.invalidRequest(`The ${what} is not valid.`, fieldErrors);
}

/** A short free-text field: trimmed, no control characters, bounded. */
/** Text that may hold line breaks and tabs (a description, notes), but no other control characters. */
export const multilineText = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(s), 'must not contain control characters other than line breaks and tabs');

export const text = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters');
