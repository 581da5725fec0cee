//! Writes the CRDs generated from the Rust types to `manifests/crds/`.

use std::fs;

fn main() -> anyhow::Result<()> {
    let dir = proto::crds::manifest_dir();
    fs::create_dir_all(&dir)?;
    for crd in proto::crds::all() {
        let path = dir.join(proto::crds::file_name(&crd));
        fs::write(&path, proto::crds::to_yaml(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
