//! netlab: multi-host test labs in network namespaces.
