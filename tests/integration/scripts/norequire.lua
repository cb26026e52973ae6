-- A handler that never requires "moonroom": connection handles must still
-- have their methods (conn:send, conn:close) and fields (id, state).
return {
  on_message = function(conn, msg, is_binary)
    if msg == "id" then
      return conn:send(string.format("%d", conn.id))
    end
    if msg == "bye" then
      return conn:close(4001, "bye")
    end
    conn.state.n = (conn.state.n or 0) + 1
    conn:send(msg .. "#" .. conn.state.n, is_binary)
  end,
}
