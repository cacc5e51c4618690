//! [`Network`]: the two model families a [`G2p`](crate::G2p) model holds, an LSTM
//! [`EncoderDecoder`] or a [`Transformer`], behind one [`StepDecoder`] so that greedy and beam
//! decoding, ensembles and evaluation take either (and both together in one ensemble).

use burn::tensor::{Device, Int, Tensor};
use padless::Model;
use padless::seq2seq::{Encoded, EncoderDecoder, StepDecoder};
use padless::transformer::{DecoderState, Transformer, TransformerEncoded};
use padless::weights::NamedWeight;

/// The network of a G2P model.
#[derive(Debug, Clone)]
pub enum Network {
    /// An LSTM encoder-decoder with attention (family `lstm`; boxed, as `AnyModel` holds it).
    Lstm(Box<EncoderDecoder>),
    /// A Transformer encoder-decoder (family `transformer`; boxed).
    Transformer(Box<Transformer>),
}

/// The header value of a model whose network is an [`EncoderDecoder`].
pub const LSTM: &str = "lstm";
/// The header value of a model whose network is a [`Transformer`].
pub const TRANSFORMER: &str = "transformer";

impl Network {
    /// `lstm` or `transformer`, as model files name the family.
    pub fn family(&self) -> &'static str {
        match self {
            Network::Lstm(_) => LSTM,
            Network::Transformer(_) => TRANSFORMER,
        }
    }

    /// The network's config as JSON (an [`EncoderDecoderConfig`] or a
    /// [`TransformerConfig`](padless::transformer::TransformerConfig)).
    ///
    /// [`EncoderDecoderConfig`]: padless::seq2seq::EncoderDecoderConfig
    pub fn config_json(&self) -> String {
        let json = match self {
            Network::Lstm(n) => serde_json::to_string(&n.config),
            Network::Transformer(n) => serde_json::to_string(&n.config),
        };
        json.expect("plain data serialises")
    }

    /// Scalar parameters.
    pub fn n_parameters(&self) -> usize {
        match self {
            Network::Lstm(n) => n.n_parameters(),
            Network::Transformer(n) => n.n_parameters(),
        }
    }

    /// Every weight, by name.
    pub fn weights(&self) -> Vec<NamedWeight> {
        match self {
            Network::Lstm(n) => Model::weights(n.as_ref()),
            Network::Transformer(n) => Model::weights(n.as_ref()),
        }
    }

    /// The LSTM encoder-decoder, when that is the family.
    pub fn lstm(&self) -> Option<&EncoderDecoder> {
        match self {
            Network::Lstm(n) => Some(n),
            Network::Transformer(_) => None,
        }
    }
}

impl From<EncoderDecoder> for Network {
    fn from(network: EncoderDecoder) -> Self {
        Network::Lstm(Box::new(network))
    }
}

impl From<Transformer> for Network {
    fn from(network: Transformer) -> Self {
        Network::Transformer(Box::new(network))
    }
}

/// A [`Network`]'s encoder result.
#[derive(Debug, Clone)]
pub enum NetworkEncoded {
    /// From an [`EncoderDecoder`].
    Lstm(Encoded),
    /// From a [`Transformer`].
    Transformer(TransformerEncoded),
}

/// A [`Network`]'s decoder state between steps.
pub enum NetworkState {
    /// An LSTM decoder's `[h, c]` per layer.
    Lstm(Vec<Tensor<2>>),
    /// A Transformer decoder's key/value cache.
    Transformer(DecoderState),
}

fn mismatch(what: &str) -> padless::Error {
    padless::Error::Config {
        layer: "G2P network".into(),
        message: format!("{what} of one model family given to a network of the other"),
    }
}

impl StepDecoder for Network {
    type Encoded = NetworkEncoded;
    type State = NetworkState;

    fn n_source_tokens(&self) -> usize {
        match self {
            Network::Lstm(n) => n.n_source_tokens(),
            Network::Transformer(n) => n.n_source_tokens(),
        }
    }

    fn n_target_tokens(&self) -> usize {
        match self {
            Network::Lstm(n) => n.n_target_tokens(),
            Network::Transformer(n) => n.n_target_tokens(),
        }
    }

    fn encode_source(&self, source: Tensor<2, Int>) -> padless::Result<NetworkEncoded> {
        Ok(match self {
            Network::Lstm(n) => NetworkEncoded::Lstm(n.encode_source(source)?),
            Network::Transformer(n) => NetworkEncoded::Transformer(n.encode_source(source)?),
        })
    }

    fn start(&self, encoded: NetworkEncoded) -> padless::Result<(NetworkEncoded, NetworkState)> {
        match (self, encoded) {
            (Network::Lstm(n), NetworkEncoded::Lstm(e)) => {
                let (e, s) = n.start(e)?;
                Ok((NetworkEncoded::Lstm(e), NetworkState::Lstm(s)))
            }
            (Network::Transformer(n), NetworkEncoded::Transformer(e)) => {
                let (e, s) = n.start(e)?;
                Ok((NetworkEncoded::Transformer(e), NetworkState::Transformer(s)))
            }
            _ => Err(mismatch("an encoder result")),
        }
    }

    fn step_from(
        &self,
        previous: Tensor<1, Int>,
        state: &NetworkState,
        encoded: &NetworkEncoded,
    ) -> padless::Result<(Tensor<2>, NetworkState)> {
        match (self, state, encoded) {
            (Network::Lstm(n), NetworkState::Lstm(s), NetworkEncoded::Lstm(e)) => {
                let (logits, s) = n.step_from(previous, s, e)?;
                Ok((logits, NetworkState::Lstm(s)))
            }
            (
                Network::Transformer(n),
                NetworkState::Transformer(s),
                NetworkEncoded::Transformer(e),
            ) => {
                let (logits, s) = n.step_from(previous, s, e)?;
                Ok((logits, NetworkState::Transformer(s)))
            }
            _ => Err(mismatch("a decoder state or encoder result")),
        }
    }

    fn rows(encoded: &NetworkEncoded) -> usize {
        match encoded {
            NetworkEncoded::Lstm(e) => EncoderDecoder::rows(e),
            NetworkEncoded::Transformer(e) => Transformer::rows(e),
        }
    }

    fn device(encoded: &NetworkEncoded) -> Device {
        match encoded {
            NetworkEncoded::Lstm(e) => EncoderDecoder::device(e),
            NetworkEncoded::Transformer(e) => Transformer::device(e),
        }
    }

    fn select_encoded(encoded: &NetworkEncoded, index: &Tensor<1, Int>) -> NetworkEncoded {
        match encoded {
            NetworkEncoded::Lstm(e) => {
                NetworkEncoded::Lstm(EncoderDecoder::select_encoded(e, index))
            }
            NetworkEncoded::Transformer(e) => {
                NetworkEncoded::Transformer(Transformer::select_encoded(e, index))
            }
        }
    }

    fn select_state(state: NetworkState, index: &Tensor<1, Int>) -> NetworkState {
        match state {
            NetworkState::Lstm(s) => NetworkState::Lstm(EncoderDecoder::select_state(s, index)),
            NetworkState::Transformer(s) => {
                NetworkState::Transformer(Transformer::select_state(s, index))
            }
        }
    }
}
