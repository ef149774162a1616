//! Go's `encoding/gob` for the values Weave Net 2.8.1 exchanges.
