//! TODO(skeleton): `report` layer (docs/architecture.md).
