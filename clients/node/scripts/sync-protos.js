// Copies the wire contract (../../proto/bucketmap/v1/*.proto) into ./proto,
// where the package loads it at run time. Run by `npm run build`. The
// source may be given as BUCKETMAP_PROTO_DIR (a folder holding bucketmap/);
// without a source (a copy of this package outside the repository) an
// existing ./proto is kept.
'use strict';
const fs = require('fs');
const path = require('path');

const here = path.resolve(__dirname, '..');
const source = process.env.BUCKETMAP_PROTO_DIR || path.join(here, '..', '..', 'proto');
const from = path.join(source, 'bucketmap', 'v1');
const to = path.join(here, 'proto', 'bucketmap', 'v1');
if (!fs.existsSync(from)) {
  if (fs.existsSync(to)) process.exit(0);
  console.error(`sync-protos: no ${from} and no ${to}`);
  process.exit(1);
}
fs.mkdirSync(to, { recursive: true });
for (const name of fs.readdirSync(from)) {
  if (name.endsWith('.proto')) fs.copyFileSync(path.join(from, name), path.join(to, name));
}
