// The last-known-good cache file, in the C++ library's format
// (client/src/cache_file.h), so that either library reads the other's:
//
//   offset  size  field (integers little-endian)
//        0     8  magic "BKTMAPLK"
//        8     4  format version (1)
//       12     4  header size (48)
//       16     8  confirmed_at: Unix nanoseconds when the mapping was last
//                 known to be current
//       24     8  mapping version (must equal the payload's)
//       32     8  payload size in bytes
//       40     8  checksum: XXH3_64bits_withSeed(payload,
//                   seed = XXH3_64bits(bytes 0..39))
//       48     -  payload: a serialized bucketmap.v1.MappingSnapshot
//
// Writes are atomic: a temporary file in the same directory, fsync,
// rename over the target, fsync of the directory.

import * as fs from 'fs';
import * as path from 'path';
import * as crypto from 'crypto';
import { xxh3 } from '@node-rs/xxhash';
import { BucketmapError } from './errors';
import { MappingSnapshotMsg, messageType, toInt } from './proto';

export const CACHE_MAGIC = Buffer.from('BKTMAPLK', 'ascii');
export const CACHE_FORMAT_VERSION = 1;
export const CACHE_HEADER_SIZE = 48;
const CHECKSUM_OFFSET = 40;

export interface CacheContents {
  snapshot: MappingSnapshotMsg;
  /** When the mapping was last known to be current, Unix milliseconds. */
  confirmedAtMs: number;
}

function checksum(header: Buffer, payload: Buffer): bigint {
  const seed = xxh3.xxh64(header.subarray(0, CHECKSUM_OFFSET));
  return xxh3.xxh64(payload, seed);
}

/** The bytes of a cache file holding `snapshot` (a MappingSnapshot message or plain object). */
export function encodeCacheFile(snapshot: object, confirmedAtMs: number): Buffer {
  const type = messageType('MappingSnapshot');
  const message = type.fromObject(snapshot);
  const payload = Buffer.from(type.encode(message).finish());
  const version = toInt((message as unknown as MappingSnapshotMsg).version);
  const header = Buffer.alloc(CACHE_HEADER_SIZE);
  CACHE_MAGIC.copy(header, 0);
  header.writeUInt32LE(CACHE_FORMAT_VERSION, 8);
  header.writeUInt32LE(CACHE_HEADER_SIZE, 12);
  header.writeBigUInt64LE(BigInt.asUintN(64, BigInt(Math.round(confirmedAtMs)) * 1000000n), 16);
  header.writeBigUInt64LE(BigInt.asUintN(64, BigInt(version)), 24);
  header.writeBigUInt64LE(BigInt(payload.length), 32);
  header.writeBigUInt64LE(checksum(header, payload), CHECKSUM_OFFSET);
  return Buffer.concat([header, payload]);
}

function dataLoss(message: string): BucketmapError {
  return new BucketmapError('DATA_LOSS', `cache file: ${message}`);
}

/**
 * Parses a cache file's bytes. DATA_LOSS for a wrong magic, truncation,
 * trailing bytes, a checksum mismatch or an unparsable payload;
 * FAILED_PRECONDITION for a format version this release does not know.
 */
export function decodeCacheFile(bytes: Buffer): CacheContents {
  if (bytes.length < 12) throw dataLoss(`truncated header (${bytes.length} bytes)`);
  if (!bytes.subarray(0, 8).equals(CACHE_MAGIC)) throw dataLoss('bad magic (not a bucketmap cache file)');
  const format = bytes.readUInt32LE(8);
  if (format !== CACHE_FORMAT_VERSION) {
    throw new BucketmapError(
      'FAILED_PRECONDITION',
      `cache file: format version ${format} is not supported (this release reads ${CACHE_FORMAT_VERSION})`,
    );
  }
  if (bytes.length < CACHE_HEADER_SIZE) throw dataLoss(`truncated header (${bytes.length} bytes)`);
  if (bytes.readUInt32LE(12) !== CACHE_HEADER_SIZE) {
    throw dataLoss(`header size ${bytes.readUInt32LE(12)} for format 1`);
  }
  const payloadSize = bytes.readBigUInt64LE(32);
  const actual = bytes.length - CACHE_HEADER_SIZE;
  if (payloadSize !== BigInt(actual)) {
    throw dataLoss(`payload is ${actual} bytes; the header says ${payloadSize}${BigInt(actual) < payloadSize ? ' (truncated)' : ''}`);
  }
  const header = bytes.subarray(0, CACHE_HEADER_SIZE);
  const payload = bytes.subarray(CACHE_HEADER_SIZE);
  if (checksum(header, payload) !== bytes.readBigUInt64LE(CHECKSUM_OFFSET)) throw dataLoss('checksum mismatch');
  let snapshot: MappingSnapshotMsg;
  try {
    snapshot = messageType('MappingSnapshot').decode(payload) as unknown as MappingSnapshotMsg;
  } catch {
    throw dataLoss('payload is not a MappingSnapshot');
  }
  const version = bytes.readBigInt64LE(24);
  if (BigInt(toInt(snapshot.version)) !== version) {
    throw dataLoss(`header version ${version} but payload version ${toInt(snapshot.version)}`);
  }
  const confirmedNs = bytes.readBigInt64LE(16);
  return { snapshot, confirmedAtMs: Number(confirmedNs / 1000000n) };
}

/** Writes `bytes` to `file` atomically (see the file comment). */
export async function writeFileAtomic(file: string, bytes: Buffer): Promise<void> {
  const dir = path.dirname(file);
  const tmp = `${file}.tmp${crypto.randomBytes(6).toString('hex')}`;
  const handle = await fs.promises.open(tmp, 'wx', 0o600);
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } catch (e) {
    await handle.close().catch(() => undefined);
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw e;
  }
  try {
    await handle.close();
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw e;
  }
  // The rename is durable only once the directory entry is.
  const d = await fs.promises.open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Reads and decodes the file at `file`. NOT_FOUND when there is none. */
export async function readCacheFile(file: string): Promise<CacheContents> {
  let bytes: Buffer;
  try {
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw new BucketmapError('FAILED_PRECONDITION', `${file} is not a regular file`);
    bytes = await fs.promises.readFile(file);
  } catch (e) {
    if (e instanceof BucketmapError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new BucketmapError('NOT_FOUND', `open ${file}: no such file`);
    throw new BucketmapError('UNAVAILABLE', `read ${file}: ${(e as Error).message}`);
  }
  return decodeCacheFile(bytes);
}
