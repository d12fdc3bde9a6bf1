import type { Handler } from "./handlers.js";
export const AUCTION_HANDLERS: { [key: string]: Handler } = {};
