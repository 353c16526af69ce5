// Renders the demo's app icon (the same drawing as demo/icon.svg) to PNG at the sizes a web app
// manifest needs for installation (192 and 512 px). Generated at staging, never committed.
//
//   node scripts/make-icons.mjs OUT_DIR
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';

// demo/icon.svg, in its 64×64 viewBox.
const BLUE = [0x39, 0x57, 0xd6];
const SUN = [0xff, 0xd1, 0x66];
const MOUNTAIN = [[14, 44], [26, 20], [34, 36], [40, 26], [50, 44]];

function insideRoundedSquare(x, y, size = 64, r = 14) {
  const cx = Math.min(Math.max(x, r), size - r);
  const cy = Math.min(Math.max(y, r), size - r);
  return x >= 0 && y >= 0 && x <= size && y <= size && (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
}

function insidePolygon(x, y, points) {
  let inside = false;
  for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
    const [xi, yi] = points[i];
    const [xj, yj] = points[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** RGBA of one point of the drawing. */
function paint(x, y) {
  if (!insideRoundedSquare(x, y)) return [0, 0, 0, 0];
  let rgb = BLUE;
  if (insidePolygon(x, y, MOUNTAIN)) rgb = BLUE.map((c) => Math.round(c + (255 - c) * 0.92));
  if ((x - 46) ** 2 + (y - 18) ** 2 <= 25) rgb = SUN;
  return [...rgb, 255];
}

function png(size) {
  const SAMPLES = 4; // 4×4 supersampling for smooth edges
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let py = 0; py < size; py++) {
    raw[py * (size * 4 + 1)] = 0; // filter: none
    for (let px = 0; px < size; px++) {
      const sum = [0, 0, 0, 0];
      for (let sy = 0; sy < SAMPLES; sy++) {
        for (let sx = 0; sx < SAMPLES; sx++) {
          const rgba = paint(((px + (sx + 0.5) / SAMPLES) * 64) / size, ((py + (sy + 0.5) / SAMPLES) * 64) / size);
          for (let c = 0; c < 3; c++) sum[c] += rgba[c] * rgba[3];
          sum[3] += rgba[3];
        }
      }
      const at = py * (size * 4 + 1) + 1 + px * 4;
      for (let c = 0; c < 3; c++) raw[at + c] = sum[3] ? Math.round(sum[c] / sum[3]) : 0;
      raw[at + 3] = Math.round(sum[3] / (SAMPLES * SAMPLES));
    }
  }
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'ascii');
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA, no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const out = process.argv[2];
if (!out) {
  console.error('usage: node scripts/make-icons.mjs OUT_DIR');
  process.exit(2);
}
for (const size of [192, 512]) writeFileSync(join(out, `icon-${size}.png`), png(size));
