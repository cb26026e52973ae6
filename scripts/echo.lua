-- Echo: every message comes back to its sender, text as text and binary as
-- binary. The smallest useful handler.
return {
  on_message = function(conn, msg, is_binary)
    conn:send(msg, is_binary)
  end,
}
