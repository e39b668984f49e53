// Reads a browser profile's files for the on-disk erasure tests
// (tests/e2e/compact.test.mjs): every file's raw bytes, and for LevelDB
// table files (`.ldb`, `.sst`) also their data blocks decompressed, since
// LevelDB compresses table blocks with Snappy and a compressed block need
// not hold a string's bytes in one piece, and for LevelDB log files
// (`.log`) their records put together again, since the log cuts a record
// at every 32 KiB block boundary, with a 7-byte header in between.
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";

/** Every regular file under `dir`, recursively. */
export async function listFiles(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/**
 * Where each marker is found in the files under `dir`: `{ [marker]: [hit] }`,
 * a hit being `"<path relative to dir> (<form>)"`, the form `latin1` or
 * `utf16` (V8 stores a string with a character above U+00FF as UTF-16),
 * followed by `, decompressed` when it is found only in a decompressed
 * LevelDB block. Files that vanish while read are skipped.
 */
export async function scanProfile(dir, markers) {
  const hits = Object.fromEntries(markers.map((m) => [m, []]));
  const needles = markers.map((m) => [m, Buffer.from(m, "latin1"), Buffer.from(m, "utf16le")]);
  for (const path of await listFiles(dir)) {
    let bytes;
    try {
      bytes = await readFile(path);
    } catch {
      continue;
    }
    const name = relative(dir, path);
    const blocks = /\.(ldb|sst)$/.test(path) ? tableBlocks(bytes, name)
      : /\.leveldb\/[0-9]+\.log$/.test(path.replaceAll("\\", "/")) ? logRecords(bytes) : [];
    for (const [marker, latin1, utf16] of needles) {
      for (const [form, needle] of [["latin1", latin1], ["utf16", utf16]]) {
        if (bytes.includes(needle)) hits[marker].push(`${name} (${form})`);
        else if (blocks.some((b) => b.includes(needle))) hits[marker].push(`${name} (${form}, ${/\.log$/.test(name) ? "log record" : "decompressed"})`);
      }
    }
  }
  return hits;
}

/** The markers of `markers` found anywhere, given `scanProfile`'s answer. */
export const found = (hits, markers) => markers.filter((m) => hits[m].length > 0);

/** How many of `markers` `scanProfile`'s answer found, and in which files (for the test logs). */
export const describeHits = (hits, markers) => {
  const files = {};
  for (const m of markers) for (const h of hits[m]) files[h] = (files[h] ?? 0) + 1;
  return `${found(hits, markers).length}/${markers.length} found: ${JSON.stringify(files)}`;
};

/**
 * The records of a LevelDB log file, each put together from its fragments:
 * the file is a run of 32 KiB blocks, each a run of fragments (a 4-byte
 * checksum, a 2-byte length, a type: 1 a whole record, 2 its first
 * fragment, 3 a middle one, 4 its last), with zeros where a block's end
 * is too short for a header. A torn tail ends the reading.
 */
export function logRecords(bytes) {
  const BLOCK = 32768;
  const out = [];
  let parts = [];
  for (let start = 0; start < bytes.length; start += BLOCK) {
    const end = Math.min(start + BLOCK, bytes.length);
    for (let o = start; o + 7 <= end; ) {
      const length = bytes[o + 4] | (bytes[o + 5] << 8);
      const type = bytes[o + 6];
      if (type === 0 || o + 7 + length > end) break;
      const data = bytes.subarray(o + 7, o + 7 + length);
      if (type === 1) out.push(data);
      else if (type === 2) parts = [data];
      else if (type === 3) parts.push(data);
      else if (type === 4) {
        parts.push(data);
        out.push(Buffer.concat(parts));
        parts = [];
      }
      o += 7 + length;
    }
  }
  return out;
}

/** The data and index blocks of a LevelDB table file, decompressed. */
export function tableBlocks(bytes, name = "table") {
  const FOOTER = 48;
  if (bytes.length < FOOTER) return [];
  const footer = bytes.subarray(bytes.length - FOOTER);
  if (footer.readUInt32LE(40) !== 0x8b80fb57 || footer.readUInt32LE(44) !== 0xdb477524) {
    throw new Error(`${name}: not a LevelDB table (bad magic)`);
  }
  let at = 0;
  const varint = (buf) => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const b = buf[at++];
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
    }
  };
  varint(footer); // metaindex handle
  varint(footer);
  const indexOffset = varint(footer);
  const indexSize = varint(footer);
  const index = block(bytes, indexOffset, indexSize, name);
  const blocks = [index];
  // Index entries: [shared, unshared, valueLength, key delta, value], the
  // value a block handle; the block ends with its restart points.
  const restarts = index.readUInt32LE(index.length - 4);
  const end = index.length - 4 - 4 * restarts;
  let p = 0;
  while (p < end) {
    at = p;
    varint(index);
    const unshared = varint(index);
    const valueLength = varint(index);
    const value = index.subarray(at + unshared, at + unshared + valueLength);
    p = at + unshared + valueLength;
    at = 0;
    const offset = varint(value);
    const size = varint(value);
    blocks.push(block(bytes, offset, size, name));
  }
  return blocks;
}

function block(bytes, offset, size, name) {
  const contents = bytes.subarray(offset, offset + size);
  const type = bytes[offset + size];
  if (type === 0) return contents;
  if (type === 1) return snappy(contents);
  throw new Error(`${name}: block at ${offset} has compression type ${type}, which this scan cannot read`);
}

/** Decompresses a raw Snappy block (no framing). */
export function snappy(input) {
  let at = 0;
  let length = 0;
  for (let shift = 0; ; shift += 7) {
    const b = input[at++];
    length += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
  }
  const out = Buffer.alloc(length);
  let o = 0;
  while (at < input.length) {
    const tag = input[at++];
    const kind = tag & 3;
    if (kind === 0) {
      let n = tag >> 2;
      if (n >= 60) {
        const bytes = n - 59;
        n = 0;
        for (let i = 0; i < bytes; i++) n += input[at++] * 2 ** (8 * i);
      }
      n += 1;
      input.copy(out, o, at, at + n);
      at += n;
      o += n;
      continue;
    }
    let n;
    let offset;
    if (kind === 1) {
      n = ((tag >> 2) & 7) + 4;
      offset = ((tag >> 5) << 8) | input[at++];
    } else if (kind === 2) {
      n = (tag >> 2) + 1;
      offset = input.readUInt16LE(at);
      at += 2;
    } else {
      n = (tag >> 2) + 1;
      offset = input.readUInt32LE(at);
      at += 4;
    }
    if (offset === 0 || offset > o) throw new Error("corrupt Snappy block");
    // Byte by byte: a copy may overlap what it writes.
    for (let i = 0; i < n; i++, o++) out[o] = out[o - offset];
  }
  if (o !== length) throw new Error("corrupt Snappy block: wrong length");
  return out;
}
