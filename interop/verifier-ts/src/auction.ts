import type { Handler } from "./handler.js";
export const AUCTION_HANDLERS: { [key: string]: Handler } = {};
