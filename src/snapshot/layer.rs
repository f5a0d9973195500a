//! A step's layer as the steps after it hold it: a [`LayerBlob`] already
//! in the content store, or one still being written on a thread of its
//! own while they run. A layer this process committed also names its
//! snapshot (the dir later steps stack as a lower dir), which is known
//! the moment the step ends; its digest and diff_id are known only once
//! the tar is written. So a step runs on its parent's snapshot at once,
//! and only what needs the digest (a chain id of a layer from elsewhere
//! above it, the image config, a cache entry) waits for it.

use std::sync::{Arc, Condvar, Mutex};

use crate::blob::LayerBlob;

/// Why a layer being written did not land (every such failure is the
/// machine's: a full disk, an I/O error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayerFailure(pub String);

/// A step's layer, ready or being written (see the module doc); cheap to
/// clone, and every clone sees the same outcome.
#[derive(Clone)]
pub struct Layer {
    inner: Arc<Inner>,
}

struct Inner {
    /// The snapshot this process committed the layer as, relative to the
    /// snapshot store's root; None for a layer found by chain id.
    snapshot: Option<String>,
    state: Mutex<State>,
    landed: Condvar,
}

enum State {
    Writing,
    Done(LayerBlob),
    Failed(LayerFailure),
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.lock() {
            State::Writing => "writing".to_string(),
            State::Done(blob) => blob.digest.to_string(),
            State::Failed(why) => format!("failed: {why}"),
        };
        f.debug_struct("Layer")
            .field("snapshot", &self.inner.snapshot)
            .field("blob", &state)
            .finish()
    }
}

impl Layer {
    /// A layer whose blob is in the content store.
    pub fn ready(blob: LayerBlob) -> Layer {
        Layer::new(None, State::Done(blob))
    }

    /// A layer whose blob is still to be written, committed as the
    /// snapshot `snapshot` (relative to the store's root); the promise
    /// lands it.
    pub fn writing(snapshot: String) -> (Layer, LayerPromise) {
        let layer = Layer::new(Some(snapshot), State::Writing);
        let promise = LayerPromise {
            layer: Some(layer.clone()),
        };
        (layer, promise)
    }

    fn new(snapshot: Option<String>, state: State) -> Layer {
        Layer {
            inner: Arc::new(Inner {
                snapshot,
                state: Mutex::new(state),
                landed: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a plain value behind.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot this process committed the layer as, if it did.
    pub fn snapshot(&self) -> Option<&str> {
        self.inner.snapshot.as_deref()
    }

    /// The blob, once it is written (at once for a ready layer).
    pub fn wait(&self) -> Result<LayerBlob, LayerFailure> {
        let mut state = self.lock();
        loop {
            match &*state {
                State::Done(blob) => return Ok(blob.clone()),
                State::Failed(why) => return Err(why.clone()),
                State::Writing => {
                    state = self
                        .inner
                        .landed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner())
                }
            }
        }
    }

    /// The blob if it is written, without waiting.
    pub fn landed(&self) -> Option<LayerBlob> {
        match &*self.lock() {
            State::Done(blob) => Some(blob.clone()),
            _ => None,
        }
    }

    /// Every layer's blob, in order, once all are written.
    pub fn wait_all(layers: &[Layer]) -> Result<Vec<LayerBlob>, LayerFailure> {
        layers.iter().map(Layer::wait).collect()
    }

    /// Ready layers of `blobs`.
    pub fn all_ready(blobs: &[LayerBlob]) -> Vec<Layer> {
        blobs.iter().cloned().map(Layer::ready).collect()
    }
}

/// The writer's side of a [`Layer::writing`]: kept with the blob or the
/// failure. Dropped unkept (the writer panicked), the layer fails, so no
/// one waits for ever.
pub struct LayerPromise {
    layer: Option<Layer>,
}

impl LayerPromise {
    /// Lands the layer: every waiter gets `outcome`.
    pub fn keep(mut self, outcome: Result<LayerBlob, LayerFailure>) {
        if let Some(layer) = self.layer.take() {
            settle(&layer, outcome);
        }
    }
}

impl Drop for LayerPromise {
    fn drop(&mut self) {
        if let Some(layer) = self.layer.take() {
            settle(
                &layer,
                Err(LayerFailure(
                    "the layer's writer stopped before the layer was written".to_string(),
                )),
            );
        }
    }
}

fn settle(layer: &Layer, outcome: Result<LayerBlob, LayerFailure>) {
    *layer.lock() = match outcome {
        Ok(blob) => State::Done(blob),
        Err(why) => State::Failed(why),
    };
    layer.inner.landed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8) -> LayerBlob {
        let digest: crate::blob::Digest = format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap();
        LayerBlob {
            digest: digest.clone(),
            diff_id: digest,
            size: n as u64,
        }
    }

    #[test]
    fn waiters_get_what_the_writer_lands() {
        let (layer, promise) = Layer::writing("p/x/fs".to_string());
        assert_eq!(layer.snapshot(), Some("p/x/fs"));
        assert!(layer.landed().is_none());
        let waiter = {
            let layer = layer.clone();
            std::thread::spawn(move || layer.wait())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        promise.keep(Ok(blob(7)));
        assert_eq!(waiter.join().unwrap(), Ok(blob(7)));
        assert_eq!(layer.landed(), Some(blob(7)));
        assert_eq!(
            Layer::wait_all(&[Layer::ready(blob(1)), layer]),
            Ok(vec![blob(1), blob(7)])
        );
    }

    #[test]
    fn a_writer_that_stops_fails_the_layer_instead_of_hanging_it() {
        let (layer, promise) = Layer::writing("p/y/fs".to_string());
        drop(promise);
        assert!(layer.wait().unwrap_err().0.contains("stopped"));
        let (layer, promise) = Layer::writing("p/z/fs".to_string());
        promise.keep(Err(LayerFailure("No space left on device".into())));
        assert_eq!(
            layer.wait(),
            Err(LayerFailure("No space left on device".into()))
        );
    }
}
