//! End to end with `fhe_model!`: a client encrypts one patient's features,
//! a server that holds only evaluation keys classifies them, and the client
//! decrypts the diagnosis. Run with:
//!
//! ```sh
//! cargo run --release --example breast_cancer_fhe
//! ```

use cml::backend::tfhe::{CompressedEvaluationKeys, EncryptedInput, EncryptedOutput};
use cml::fhe_model;

fhe_model!(BreastCancer = "specs/breast_cancer_logreg.yaml");

/// Bytes limit the server accepts for uploads.
const LIMIT: u64 = 1 << 30;

fn main() -> Result<(), cml::Error> {
    // The first sample of the bundled test split.
    let data = cml::data::Dataset::from_csv(
        "specs/breast_cancer_logreg.test.csv".as_ref(),
        &BreastCancer::FEATURES.map(String::from),
    )?;
    let x = BreastCancer::row(data.features.row(0))?;

    // Client: keys, then the encrypted features, as bytes for the wire.
    let params = BreastCancer::params();
    let client = cml::backend::tfhe::ClientKey::generate(params);
    let key_bytes = client.compressed_evaluation_keys().to_bytes()?;
    let input_bytes = BreastCancer::encrypt(&client, &x)?.to_bytes()?;
    println!(
        "client → server: evaluation keys {} B, encrypted features {} B",
        key_bytes.len(),
        input_bytes.len()
    );

    // Server: evaluation keys and ciphertexts only.
    let keys = CompressedEvaluationKeys::from_bytes(&key_bytes, LIMIT, params)?.decompress();
    let input = EncryptedInput::from_bytes(&input_bytes, LIMIT, params)?;
    let output_bytes = BreastCancer::run(&keys, &input)?.to_bytes()?;
    println!("server → client: encrypted scores {} B", output_bytes.len());

    // Client: decrypt and compare with the clear prediction.
    let output = EncryptedOutput::from_bytes(&output_bytes, LIMIT, params)?;
    let fhe = BreastCancer::decrypt(&client, &output)?;
    let clear = BreastCancer::predict(&x)?;
    println!(
        "diagnosis: {} (p = {:.4}); clear model agrees: {}",
        fhe.class.name(),
        fhe.probabilities.map_or(f64::NAN, |p| p[fhe.class.index()]),
        fhe == clear
    );
    assert_eq!(fhe, clear);
    Ok(())
}
