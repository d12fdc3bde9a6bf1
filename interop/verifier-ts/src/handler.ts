// The handler signature shared by every format module.
import { type Json, type Outcome, obj, parseJson } from "./util.js";

export type Ctx = { dir: string; inputName: string; meta: { [k: string]: Json } };
/** A handler; `project`, if set, maps both the expected and the produced output before comparing
 * (for fields the spec leaves free-form, e.g. an error's detail text). */
export type Handler = ((input: Uint8Array, ctx: Ctx) => Outcome) & { project?: (out: Json) => Json };

export const jsonInput = (b: Uint8Array): { [k: string]: Json } => obj(parseJson(Buffer.from(b).toString("utf8")));
export const ok = (output: Json): Outcome => ({ accept: true, output });
