import path from 'node:path';
import type { Config } from './config';

/** The SQLite file inside the data directory. */
export function databaseFile(config: Pick<Config, 'dataDir'>): string {
  return path.join(config.dataDir, 'pigeon.db');
}
