//! The `tadsr-edge` command line: a thin layer over the library.

mod cli;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
