//! TODO(skeleton): `cache` layer (docs/architecture.md).
