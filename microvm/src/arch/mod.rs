//! Architecture code shared by both guest kinds. Only x86-64 is supported.

pub mod x86_64;
