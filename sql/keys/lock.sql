-- Master key rotation: no data key is created or deleted while the keys are re-wrapped.
LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE;
