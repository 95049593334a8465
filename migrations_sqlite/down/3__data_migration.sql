-- Version 3 only moved data between existing columns; there is no earlier
-- state to restore, and its rows stay valid under version 2.
SELECT 1;
