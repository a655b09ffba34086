//! TODO(skeleton): `stages` layer (docs/architecture.md).
