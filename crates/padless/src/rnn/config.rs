//! `LstmConfig`, `GruConfig`, `SimpleRnnConfig`: Keras-style options, and the layer types.

use burn::config::Config;
use burn::tensor::Device;

use super::bidirectional::{Bidirectional, MergeMode};
use super::gru::GruCell;
use super::lstm::LstmCell;
use super::recurrent::{Recurrent, RecurrentOptions};
use super::simple_rnn::SimpleRnnCell;

/// A mask-aware LSTM layer (Keras `LSTM`).
pub type Lstm = Recurrent<LstmCell>;
/// A mask-aware GRU layer (Keras `GRU`, `reset_after=True`).
pub type Gru = Recurrent<GruCell>;
/// A mask-aware Elman RNN layer (Keras `SimpleRNN`).
pub type SimpleRnn = Recurrent<SimpleRnnCell>;

macro_rules! recurrent_config {
    ($(#[$doc:meta])* $config:ident, $cell:ident) => {
        $(#[$doc])*
        #[derive(Config, Debug)]
        pub struct $config {
            /// Input features per step.
            pub d_input: usize,
            /// Hidden units (`units` in Keras).
            pub d_hidden: usize,
            /// Return every step's output (default false: the last valid step's).
            #[config(default = false)]
            pub return_sequences: bool,
            /// Also return the final states (default false).
            #[config(default = false)]
            pub return_state: bool,
            /// Process steps from last to first (default false).
            #[config(default = false)]
            pub go_backwards: bool,
            /// Output 0 at masked steps instead of the carried output (default false).
            #[config(default = false)]
            pub zero_output_for_mask: bool,
            /// Carry final states to the next call until `reset_states` (default false).
            #[config(default = false)]
            pub stateful: bool,
            /// Learn the initial states instead of starting from zeros (default false).
            #[config(default = false)]
            pub learn_initial_state: bool,
            /// Use biases (default true).
            #[config(default = true)]
            pub use_bias: bool,
        }

        impl $config {
            /// The options part of this config.
            pub fn options(&self) -> RecurrentOptions {
                RecurrentOptions {
                    return_sequences: self.return_sequences,
                    return_state: self.return_state,
                    go_backwards: self.go_backwards,
                    zero_output_for_mask: self.zero_output_for_mask,
                    stateful: self.stateful,
                    learn_initial_state: self.learn_initial_state,
                }
            }

            /// Builds the layer with Keras' initialisation.
            pub fn init(&self, device: &Device) -> Recurrent<$cell> {
                let cell = $cell::new(self.d_input, self.d_hidden, self.use_bias, device);
                Recurrent::new(cell, self.options(), device)
            }

            /// Builds a [`Bidirectional`] pair of layers with independent weights;
            /// `go_backwards` is ignored (the backward half reads each row's valid part
            /// reversed).
            pub fn init_bidirectional(&self, merge_mode: MergeMode, device: &Device) -> Bidirectional<$cell> {
                let mut options = self.options();
                options.go_backwards = false;
                let layer = || Recurrent::new(
                    $cell::new(self.d_input, self.d_hidden, self.use_bias, device),
                    options,
                    device,
                );
                Bidirectional::new(layer(), layer(), merge_mode)
            }
        }
    };
}

recurrent_config!(
    /// Configuration of an [`Lstm`].
    LstmConfig,
    LstmCell
);
recurrent_config!(
    /// Configuration of a [`Gru`].
    GruConfig,
    GruCell
);
recurrent_config!(
    /// Configuration of a [`SimpleRnn`].
    SimpleRnnConfig,
    SimpleRnnCell
);
