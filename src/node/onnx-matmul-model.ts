/**
 * One-node ONNX models for the `ort` backend's products, with symbolic shapes (float32, opset 13):
 * Y = MatMul(A, B) and Y = Gemm(A, B, transA = 1), serialised by hand: a few protobuf fields, so no
 * ONNX or protobuf dependency is needed.
 */
function varint(value: number): number[] {
  const out: number[] = [];
  while (value > 127) {
    out.push((value & 127) | 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}
const field = (number: number, payload: number[]) => [...varint((number << 3) | 2), ...varint(payload.length), ...payload];
const integer = (number: number, value: number) => [...varint(number << 3), ...varint(value)];
const text = (value: string) => [...new TextEncoder().encode(value)];

function tensorInfo(name: string, rows: string, cols: string): number[] {
  const dim = (param: string) => field(1, field(2, text(param))); // TensorShapeProto.dim { dim_param }
  const tensorType = [...integer(1, 1), ...field(2, [...dim(rows), ...dim(cols)])]; // elem_type FLOAT, shape
  return [...field(1, text(name)), ...field(2, field(1, tensorType))]; // ValueInfoProto { name, type.tensor_type }
}

/** AttributeProto { name, i, type = INT }. */
const intAttribute = (name: string, value: number) => field(5, [...field(1, text(name)), ...integer(3, value), ...integer(20, 2)]);

function model(operator: string, attributes: number[], aRows: string, aCols: string): Uint8Array {
  const node = [...field(1, text("A")), ...field(1, text("B")), ...field(2, text("Y")), ...field(4, text(operator)), ...attributes];
  const graph = [
    ...field(1, node), ...field(2, text(operator.toLowerCase())),
    ...field(11, tensorInfo("A", aRows, aCols)), ...field(11, tensorInfo("B", "k", "n")), ...field(12, tensorInfo("Y", "m", "n")),
  ];
  const opset = [...field(1, []), ...integer(2, 13)];
  return new Uint8Array([...integer(1, 7), ...field(7, graph), ...field(8, opset)]);
}

/** Y (m×n) = A (m×k) · B (k×n). */
export function matmulModel(): Uint8Array {
  return model("MatMul", [], "m", "k");
}

/** Y (m×n) = Aᵀ · B with A stored k×m: MLAS reads A transposed while packing it, so no transposed copy is needed. */
export function transposedAGemmModel(): Uint8Array {
  return model("Gemm", intAttribute("transA", 1), "k", "m");
}
