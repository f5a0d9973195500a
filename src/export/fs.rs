//! `-o type=local` and `-o type=tar`: an image's file system, not its
//! layers.

use crate::cache::ContentStore;
use crate::image::layout::StoredImage;

use super::ExportError;

/// `-o type=local` / `type=tar`: the image's file system, its layers
/// applied in order, written into `dest` (a directory) or as a tar file.
pub fn export_filesystem(
    store: &ContentStore,
    image: &StoredImage,
    dest: &std::path::Path,
    tar: bool,
) -> Result<(), ExportError> {
    let scratch;
    let root = if tar {
        scratch = tempfile::tempdir().map_err(ExportError::output(dest))?;
        scratch.path().to_path_buf()
    } else {
        std::fs::create_dir_all(dest).map_err(ExportError::output(dest))?;
        dest.to_path_buf()
    };
    for layer in &image.layers {
        let reader = crate::snapshot::store::open_layer(store, &layer.digest)
            .map_err(ExportError::output(dest))?;
        crate::snapshot::apply_layer(&root, reader, &layer.digest.to_string(), Default::default())
            .map_err(ExportError::output(dest))?;
    }
    if tar {
        let file = std::fs::File::create(dest).map_err(ExportError::output(dest))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", &root)
            .map_err(ExportError::output(dest))?;
        let mut out = builder.into_inner().map_err(ExportError::output(dest))?;
        std::io::Write::flush(&mut out).map_err(ExportError::output(dest))?;
    }
    Ok(())
}
