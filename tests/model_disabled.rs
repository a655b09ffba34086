//! Without the `torch` feature the model layer still compiles and every entry point says to
//! rebuild with it (`cargo test --no-default-features --test model_disabled`).
#![cfg(not(feature = "torch"))]

use std::path::Path;

use brspeech::model::{
    Detector, DetectorOptions, ExportOptions, ExtractOptions, Extractor, ImportOptions, ModelError,
    Preprocessing, SslOutput, export_checkpoint, import_checkpoint, runtime_info,
};

fn assert_disabled(e: ModelError) {
    assert!(matches!(e, ModelError::TorchDisabled { .. }), "{e}");
    assert!(
        e.to_string().contains("rebuild with the `torch` feature"),
        "{e}"
    );
}

#[test]
fn every_entry_point_reports_torch_disabled() {
    assert_disabled(Extractor::load(Path::new("ssl"), &ExtractOptions::default()).unwrap_err());
    assert_disabled(Detector::load(Path::new("model"), &DetectorOptions::default()).unwrap_err());
    assert_disabled(
        import_checkpoint(&ImportOptions {
            ssl_dir: "ssl".into(),
            backend: "aasist.safetensors".into(),
            preprocessing: Preprocessing::default(),
            output: SslOutput::LastHiddenState,
            embed_ssl: true,
            out_dir: "out".into(),
        })
        .unwrap_err(),
    );
    assert_disabled(export_checkpoint(&ExportOptions::default()).unwrap_err());
    let info = runtime_info();
    assert!(!info.torch_feature);
    assert!(
        info.to_string()
            .contains("rebuild with the `torch` feature")
    );
}
