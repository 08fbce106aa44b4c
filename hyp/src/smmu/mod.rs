//! SMMUv3 architecture definitions: registers, stream table entries, context descriptors, commands and
//! event records, encoded and decoded from the specification (Arm IHI 0070).
