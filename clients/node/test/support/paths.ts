// Where the tests find the repository's files and the binaries the CMake
// build made. tests/node/run_node_tests.sh sets the variables; run from
// clients/node inside the repository, the defaults find the source tree
// and build/.
import * as fs from 'fs';
import * as path from 'path';

// dist/test/support -> the package root.
export const packageRoot = path.resolve(__dirname, '..', '..', '..');
export const repoRoot = process.env.BUCKETMAP_SOURCE_DIR ?? path.resolve(packageRoot, '..', '..');
export const buildDir = process.env.BUCKETMAP_BUILD_DIR ?? path.join(repoRoot, 'build');

export function placementVectorPath(): string {
  return path.join(repoRoot, 'tests', 'testdata', 'placement_vector.txt');
}

/** A binary of the CMake build, or undefined when it is not built. */
export function buildBinary(envName: string, relative: string): string | undefined {
  const p = process.env[envName] ?? path.join(buildDir, relative);
  return fs.existsSync(p) ? p : undefined;
}
