-- Undo of V2: forgets where an interrupted sync stood (the next one starts over).
DROP TABLE IF EXISTS sync_cursors;
