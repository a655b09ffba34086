//! TODO(skeleton): `shards` layer (docs/architecture.md).
