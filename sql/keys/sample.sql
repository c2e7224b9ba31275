-- A sample of the wrapped data keys: the first and the last few by subject (two probes of
-- the primary key, whatever the table's size; either half may repeat rows of the other in a
-- small table). A store starting with a master key checks that it unwraps one of them,
-- before anything is written (lifecycle/masterkey.py).
(SELECT wrapped_key FROM data_keys ORDER BY subject LIMIT %(count)s)
UNION ALL
(SELECT wrapped_key FROM data_keys ORDER BY subject DESC LIMIT %(count)s);
