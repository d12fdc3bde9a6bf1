import type { Handler } from "./handler.js";
export const POL_HANDLERS: { [key: string]: Handler } = {};
