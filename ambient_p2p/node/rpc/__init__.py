"""The node's HTTP doors (spec/rpc.md): ``server`` (hypercorn's trio worker, guards, the
node extension), ``app`` (routes), ``solana`` (JSON-RPC methods), ``pubsub`` (WebSocket
subscriptions), ``txindex`` (block and transaction history; stored by ledger/txstatus.py),
``accounts`` (the one view of the bank's accounts), ``openai_api`` (chat completions through
the auction), ``metrics`` (Prometheus; operation timings from node/timings.py)."""
