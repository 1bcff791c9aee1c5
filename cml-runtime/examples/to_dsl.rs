//! Prints a spec in the model DSL: `cargo run -p cml-runtime --example to_dsl -- SPEC NAME`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(name)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: to_dsl SPEC MODEL_NAME");
        std::process::exit(2);
    };
    match cml_runtime::ModelSpec::load(path) {
        Ok(loaded) => print!("{}", loaded.spec.to_dsl(name)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
