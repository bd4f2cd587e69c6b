import { readFileSync, statSync } from "node:fs";
import { dirname, join, basename } from "node:path";
import { LoftqError } from "../errors.js";
import type { Matrix } from "../tensor/matrix.js";
import { CheckpointError, readJsonFile } from "./checkpoint.js";
import { jsonPreview } from "./json-preview.js";

/**
 * Reads the weights of a TensorFlow.js graph model (`model.json` + binary shards): the shards are
 * one byte stream, sliced in manifest order. Only float32 and int32 weights without quantization
 * are supported (enough for the bundled real-weight examples).
 */
export class TfjsFormatError extends LoftqError {
  constructor(message: string) {
    super("PARSE_ERROR", message);
    this.name = "TfjsFormatError";
  }
}

export interface TfjsWeight {
  name: string;
  shape: number[];
  dtype: "float32" | "int32";
  data: Float32Array | Int32Array;
}

interface ManifestGroup {
  paths: string[];
  weights: Array<{ name: string; shape: number[]; dtype: string; quantization?: unknown }>;
}

const BYTES_PER_ELEMENT = { float32: 4, int32: 4 } as const;

export function readTfjsWeights(modelJsonPath: string): TfjsWeight[] {
  // The checkpoint reader's JSON read (regular files only, bounded size), its errors as this format's.
  let model: { weightsManifest?: unknown };
  try {
    model = readJsonFile(modelJsonPath) as { weightsManifest?: unknown };
  } catch (error) {
    if (error instanceof CheckpointError) throw new TfjsFormatError(error.message);
    throw error;
  }
  if (typeof model !== "object" || model === null || !Array.isArray(model.weightsManifest)) throw new TfjsFormatError(`${modelJsonPath}: no weightsManifest`);
  const out: TfjsWeight[] = [];
  for (const group of model.weightsManifest as ManifestGroup[]) {
    if (typeof group !== "object" || group === null || !Array.isArray(group.paths) || !Array.isArray(group.weights)) {
      throw new TfjsFormatError(`${modelJsonPath}: a weightsManifest group without "paths" and "weights" lists`);
    }
    const buffers = group.paths.map((path) => {
      if (typeof path !== "string" || basename(path) !== path || path === "." || path === "..") throw new TfjsFormatError(`${modelJsonPath}: shard path ${jsonPreview(path)} is not a file in the model directory`);
      const shard = join(dirname(modelJsonPath), path);
      if (!statSync(shard).isFile()) throw new TfjsFormatError(`${shard}: not a regular file`);
      return readFileSync(shard);
    });
    const bytes = Buffer.concat(buffers);
    let offset = 0;
    for (const weight of group.weights) {
      if (typeof weight !== "object" || weight === null || typeof weight.name !== "string") throw new TfjsFormatError(`${modelJsonPath}: a weight entry without a name`);
      if (weight.quantization !== undefined) throw new TfjsFormatError(`${weight.name}: quantized TF.js weights are not supported`);
      if (weight.dtype !== "float32" && weight.dtype !== "int32") throw new TfjsFormatError(`${weight.name}: unsupported dtype ${jsonPreview(weight.dtype)}`);
      if (!Array.isArray(weight.shape) || !weight.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        throw new TfjsFormatError(`${weight.name}: shape must be a list of non-negative integers, got ${jsonPreview(weight.shape)}`);
      }
      const count = weight.shape.reduce((a, b) => a * b, 1);
      const length = count * BYTES_PER_ELEMENT[weight.dtype];
      if (!Number.isSafeInteger(length) || offset + length > bytes.length) throw new TfjsFormatError(`${weight.name}: runs past the end of the shards`);
      const copy = new Uint8Array(bytes.subarray(offset, offset + length));
      out.push({
        name: weight.name,
        shape: weight.shape,
        dtype: weight.dtype,
        data: weight.dtype === "float32" ? new Float32Array(copy.buffer) : new Int32Array(copy.buffer),
      });
      offset += length;
    }
  }
  return out;
}

/**
 * The dense layer kernels of a TF.js model as PyTorch-oriented (out×in) matrices: float32 weights
 * whose shape is [in, out] after dropping leading 1s (1×1 convolutions), both sides > 1,
 * excluding embedding tables (`minDimension` filters tiny ones).
 */
export function tfjsLinearWeights(modelJsonPath: string, minDimension = 64): Array<{ name: string; weight: Matrix }> {
  const out: Array<{ name: string; weight: Matrix }> = [];
  for (const tensor of readTfjsWeights(modelJsonPath)) {
    if (tensor.dtype !== "float32" || /embedding/i.test(tensor.name)) continue;
    const dims = tensor.shape.filter((d, i) => !(d === 1 && i < tensor.shape.length - 2));
    if (dims.length !== 2 || dims[0]! < minDimension || dims[1]! < minDimension) continue;
    const [inFeatures, outFeatures] = dims as [number, number];
    const source = tensor.data as Float32Array;
    const data = new Float32Array(source.length);
    for (let i = 0; i < inFeatures; i++) for (let j = 0; j < outFeatures; j++) data[j * inFeatures + i] = source[i * outFeatures + j]!;
    out.push({ name: tensor.name, weight: { rows: outFeatures, cols: inFeatures, data } });
  }
  return out;
}
