pub use cml_runtime;
