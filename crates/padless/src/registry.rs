//! The layer registry: the one list of the layers a [`Sequential`](crate::sequential::Sequential)
//! stack can hold. Each line gives a layer's `type` in a model config, its variant name, its
//! layer type and its config type; [`AnyLayer`], [`LayerConfig`] and the dispatch between
//! them are generated from it.
//!
//! Adding a layer: write its file (the layer with `impl Layer`, whose `config()` returns its
//! [`LayerConfig`] variant, and its config type with `impl BuildLayer`, `Serialize`,
//! `Deserialize` and `#[serde(deny_unknown_fields)]`), then add its line to the list at the
//! end of this file.

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::Result;
use crate::layer::{BuildLayer, Layer, Spec};
use crate::layers::{
    Activation, ActivationConfig, Dense, DenseConfig, DropMask, DropMaskConfig, Dropout,
    DropoutConfig, Embedding, EmbeddingConfig, GlobalAveragePooling1D,
    GlobalAveragePooling1DConfig, GlobalMaxPooling1D, GlobalMaxPooling1DConfig, LayerNormalization,
    LayerNormalizationConfig, Masking, MaskingConfig, RepeatVector, RepeatVectorConfig,
    TimeDistributed, TimeDistributedConfig,
};
use crate::rnn::{
    AnyBidirectional, AnyRecurrentConfig, Bidirectional, BidirectionalConfig, Gru, GruConfig, Lstm,
    LstmConfig, SimpleRnn, SimpleRnnConfig,
};
use crate::strict;

macro_rules! registry {
    ($($tag:literal => $variant:ident($layer:ty, $config:ty),)*) => {
        /// Any layer that can stand in a [`Sequential`](crate::sequential::Sequential) stack,
        /// as one burn `Module` enum so that optimizers see one module.
        // The variants differ in size (a bidirectional pair holds two layers); a stack holds
        // a few, built once, so none is boxed.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum AnyLayer {
            $(
                #[doc = concat!("A `", $tag, "` layer.")]
                $variant($layer),
            )*
        }

        /// One layer of a [`ModelConfig`](crate::model_config::ModelConfig): the layer's own
        /// config, tagged by its `type` (`{"type": "lstm", "units": 8}`). Its input size is
        /// inferred from the previous layer when it is built. Reading one rejects unknown
        /// fields, naming the nearest known one.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum LayerConfig {
            $(
                #[doc = concat!("`", $tag, "`.")]
                #[serde(rename = $tag)]
                $variant($config),
            )*
        }

        impl AnyLayer {
            /// The layer behind the [`Layer`] trait.
            pub fn as_layer(&self) -> &dyn Layer {
                match self {
                    $(AnyLayer::$variant(layer) => layer,)*
                }
            }

            /// The layer behind the [`Layer`] trait, mutable.
            pub fn as_layer_mut(&mut self) -> &mut dyn Layer {
                match self {
                    $(AnyLayer::$variant(layer) => layer,)*
                }
            }
        }

        $(
            impl From<$layer> for AnyLayer {
                fn from(layer: $layer) -> Self {
                    AnyLayer::$variant(layer)
                }
            }

            impl From<$config> for LayerConfig {
                fn from(config: $config) -> Self {
                    LayerConfig::$variant(config)
                }
            }
        )*

        impl LayerConfig {
            /// Every layer `type` a model config can name.
            pub const TYPES: &'static [&'static str] = &[$($tag),*];

            /// The layer's `type` in a model config (`lstm`).
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(LayerConfig::$variant(_) => $tag,)*
                }
            }

            /// Builds the layer with fresh weights for inputs of spec `input`, from which it
            /// takes its input size.
            ///
            /// # Errors
            /// An input the layer cannot take or an invalid option, naming the layer.
            pub fn build(&self, input: &Spec, device: &Device) -> Result<AnyLayer> {
                match self {
                    $(LayerConfig::$variant(config) => config.build(input, device).map(AnyLayer::$variant),)*
                }
            }

            /// The input features the config records, if any (see [`BuildLayer::d_input`]).
            pub fn d_input(&self) -> Option<usize> {
                match self {
                    $(LayerConfig::$variant(config) => config.d_input(),)*
                }
            }

            /// Reads `{"type": ..., ...}`, checking every field against the config type's;
            /// `context` (`layer 2`) names it in errors.
            pub(crate) fn from_json(json: Json, context: &str) -> std::result::Result<Self, String> {
                let (tag, object) = strict::split_tag(json, "type", context)?;
                let within = format!("{context} ({tag})");
                match tag.as_str() {
                    $($tag => strict::from_object::<$config>(object, &within).map(LayerConfig::$variant),)*
                    other => Err(strict::unknown("layer type", other, context, Self::TYPES)),
                }
            }
        }
    };
}

impl<'de> Deserialize<'de> for LayerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        LayerConfig::from_json(json, "layer").map_err(serde::de::Error::custom)
    }
}

impl From<AnyRecurrentConfig> for LayerConfig {
    fn from(config: AnyRecurrentConfig) -> Self {
        match config {
            AnyRecurrentConfig::Lstm(c) => LayerConfig::Lstm(c),
            AnyRecurrentConfig::Gru(c) => LayerConfig::Gru(c),
            AnyRecurrentConfig::SimpleRnn(c) => LayerConfig::SimpleRnn(c),
        }
    }
}

impl<C> From<Bidirectional<C>> for AnyLayer
where
    AnyBidirectional: From<Bidirectional<C>>,
{
    fn from(pair: Bidirectional<C>) -> Self {
        AnyLayer::Bidirectional(pair.into())
    }
}

impl AnyLayer {
    /// Forgets carried states (stateful recurrent layers); other layers ignore it.
    pub fn reset_states(&self) {
        self.as_layer().reset_states();
    }

    /// The config that rebuilds this layer.
    pub fn config(&self) -> LayerConfig {
        self.as_layer()
            .config()
            .expect("every registered layer returns its config")
    }
}

registry! {
    "masking" => Masking(Masking, MaskingConfig),
    "embedding" => Embedding(Embedding, EmbeddingConfig),
    "dense" => Dense(Dense, DenseConfig),
    "time_distributed_dense" => TimeDistributed(TimeDistributed, TimeDistributedConfig),
    "repeat_vector" => RepeatVector(RepeatVector, RepeatVectorConfig),
    "dropout" => Dropout(Dropout, DropoutConfig),
    "activation" => Activation(Activation, ActivationConfig),
    "layer_normalization" => LayerNormalization(LayerNormalization, LayerNormalizationConfig),
    "global_average_pooling1d" => GlobalAveragePooling1D(GlobalAveragePooling1D, GlobalAveragePooling1DConfig),
    "global_max_pooling1d" => GlobalMaxPooling1D(GlobalMaxPooling1D, GlobalMaxPooling1DConfig),
    "drop_mask" => DropMask(DropMask, DropMaskConfig),
    "simple_rnn" => SimpleRnn(SimpleRnn, SimpleRnnConfig),
    "lstm" => Lstm(Lstm, LstmConfig),
    "gru" => Gru(Gru, GruConfig),
    "bidirectional" => Bidirectional(AnyBidirectional, BidirectionalConfig),
}
