/** The float32 `steps` ulps away from `value` (negative steps go down; crosses zero through −0 and +0). */
export function ulpsAway(value: number, steps: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, value);
  const bits = view.getInt32(0);
  const key = (bits >= 0 ? bits : -(bits & 0x7fffffff) - 1) + steps;
  view.setInt32(0, key >= 0 ? key : (-(key + 1)) | 0x80000000);
  return view.getFloat32(0);
}
