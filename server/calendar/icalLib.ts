/**
 * ical.js for this CommonJS project: the package is an ES module with a CommonJS build (`require` picks it), but
 * its type declarations are the ES module's, which TypeScript will not let a CommonJS file import. The types are
 * imported as the ES module's and the value required, so every module here uses one `ICAL` with full types.
 */
import type ICALModule from 'ical.js' with { 'resolution-mode': 'import' };

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ICAL: typeof ICALModule = require('ical.js');
export default ICAL;
