//! Tonic [`Codec`]s over [`DynamicMessage`], so the gateway can call any RPC of the
//! contract without generated types: encoding is plain protobuf; decoding uses the
//! method's output descriptor ([`DynamicCodec`]) or keeps the encoded bytes for the
//! JSON writer ([`RawCodec`], unary REST calls).

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes requests and decodes responses of one method.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec whose decoder yields messages of type `output`.
    pub fn new(output: MessageDescriptor) -> Self {
        DynamicCodec { output }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.output.clone())
    }
}

/// Writes a [`DynamicMessage`] in the protobuf wire format.
#[derive(Debug, Clone, Copy)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

/// Reads a [`DynamicMessage`] of a fixed type.
#[derive(Debug, Clone)]
pub struct DynamicDecoder(MessageDescriptor);

/// Stream messages through the gateway are small (a comment, a notification), and
/// an SSE subscriber holds its decoder for hours: 1 KiB to start, grown on demand,
/// instead of tonic's 8 KiB, saves 7 KiB on every idle stream.
const STREAM_BUFFER_BYTES: usize = 1024;

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(STREAM_BUFFER_BYTES, 32 * 1024)
    }

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the response: {e}")))
    }
}

/// Sends a [`DynamicMessage`]; yields each answer as its encoded bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = DynamicMessage;
    type Decode = bytes::Bytes;
    type Encoder = DynamicEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// Takes a message's bytes as they came.
#[derive(Debug, Clone, Copy)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
