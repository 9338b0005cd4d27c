// Pipeline stages beyond the three reference tokenizers, checked against the Rust library: two
// small tokenizer.json files (made for these tests) and the ids, texts and decodings that
// Hugging Face `tokenizers` 0.23.2 gives for them. A: SentencePiece-style BPE (Prepend + Replace
// normalizers, byte fallback, fused unknown token, lstrip/single_word added token, BOS template,
// Replace/ByteFallback/Fuse/Strip decoders). B: byte-level BPE with NFKC/Lowercase/Strip, Split
// with every behaviour and invert, Digits, ByteLevel with prefix space and GPT-2 regex,
// ignore_merges, an rstrip added token matched after normalization, an EOS template. C and D:
// Metaspace, Whitespace and WhitespaceSplit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"

namespace {

const char* kTokenizerA =
    R"json({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"<unk>","single_)json"
    R"json(word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":1,"content":"<s>")json"
    R"json(,"single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":2,"conte)json"
    R"json(nt":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id)json"
    R"json(":279,"content":"[MASK]","single_word":true,"lstrip":true,"rstrip":false,"normalized":false,"special)json"
    R"json(":false}],"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"R)json"
    R"json(eplace","pattern":{"String":" "},"content":"▁"}]},"pre_tokenizer":null,"post_processor":{"type":"Tem)json"
    R"json(plateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id")json"
    R"json(:0}}],"pair":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"Sequen)json"
    R"json(ce":{"id":"B","type_id":1}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},"deco)json"
    R"json(der":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type)json"
    R"json(":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},"model":{"type)json"
    R"json(":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":nul)json"
    R"json(l,"fuse_unk":true,"byte_fallback":true,"ignore_merges":false,"vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0)json"
    R"json(x00>":3,"<0x01>":4,"<0x02>":5,"<0x03>":6,"<0x04>":7,"<0x05>":8,"<0x06>":9,"<0x07>":10,"<0x08>":11,"<)json"
    R"json(0x09>":12,"<0x0A>":13,"<0x0B>":14,"<0x0C>":15,"<0x0D>":16,"<0x0E>":17,"<0x0F>":18,"<0x10>":19,"<0x11)json"
    R"json(>":20,"<0x12>":21,"<0x13>":22,"<0x14>":23,"<0x15>":24,"<0x16>":25,"<0x17>":26,"<0x18>":27,"<0x19>":2)json"
    R"json(8,"<0x1A>":29,"<0x1B>":30,"<0x1C>":31,"<0x1D>":32,"<0x1E>":33,"<0x1F>":34,"<0x20>":35,"<0x21>":36,"<)json"
    R"json(0x22>":37,"<0x23>":38,"<0x24>":39,"<0x25>":40,"<0x26>":41,"<0x27>":42,"<0x28>":43,"<0x29>":44,"<0x2A)json"
    R"json(>":45,"<0x2B>":46,"<0x2C>":47,"<0x2D>":48,"<0x2E>":49,"<0x2F>":50,"<0x30>":51,"<0x31>":52,"<0x32>":5)json"
    R"json(3,"<0x33>":54,"<0x34>":55,"<0x35>":56,"<0x36>":57,"<0x37>":58,"<0x38>":59,"<0x39>":60,"<0x3A>":61,"<)json"
    R"json(0x3B>":62,"<0x3C>":63,"<0x3D>":64,"<0x3E>":65,"<0x3F>":66,"<0x40>":67,"<0x41>":68,"<0x42>":69,"<0x43)json"
    R"json(>":70,"<0x44>":71,"<0x45>":72,"<0x46>":73,"<0x47>":74,"<0x48>":75,"<0x49>":76,"<0x4A>":77,"<0x4B>":7)json"
    R"json(8,"<0x4C>":79,"<0x4D>":80,"<0x4E>":81,"<0x4F>":82,"<0x50>":83,"<0x51>":84,"<0x52>":85,"<0x53>":86,"<)json"
    R"json(0x54>":87,"<0x55>":88,"<0x56>":89,"<0x57>":90,"<0x58>":91,"<0x59>":92,"<0x5A>":93,"<0x5B>":94,"<0x5C)json"
    R"json(>":95,"<0x5D>":96,"<0x5E>":97,"<0x5F>":98,"<0x60>":99,"<0x61>":100,"<0x62>":101,"<0x63>":102,"<0x64>)json"
    R"json(":103,"<0x65>":104,"<0x66>":105,"<0x67>":106,"<0x68>":107,"<0x69>":108,"<0x6A>":109,"<0x6B>":110,"<0)json"
    R"json(x6C>":111,"<0x6D>":112,"<0x6E>":113,"<0x6F>":114,"<0x70>":115,"<0x71>":116,"<0x72>":117,"<0x73>":118)json"
    R"json(,"<0x74>":119,"<0x75>":120,"<0x76>":121,"<0x77>":122,"<0x78>":123,"<0x79>":124,"<0x7A>":125,"<0x7B>")json"
    R"json(:126,"<0x7C>":127,"<0x7D>":128,"<0x7E>":129,"<0x7F>":130,"<0x80>":131,"<0x81>":132,"<0x82>":133,"<0x)json"
    R"json(83>":134,"<0x84>":135,"<0x85>":136,"<0x86>":137,"<0x87>":138,"<0x88>":139,"<0x89>":140,"<0x8A>":141,)json"
    R"json("<0x8B>":142,"<0x8C>":143,"<0x8D>":144,"<0x8E>":145,"<0x8F>":146,"<0x90>":147,"<0x91>":148,"<0x92>":)json"
    R"json(149,"<0x93>":150,"<0x94>":151,"<0x95>":152,"<0x96>":153,"<0x97>":154,"<0x98>":155,"<0x99>":156,"<0x9)json"
    R"json(A>":157,"<0x9B>":158,"<0x9C>":159,"<0x9D>":160,"<0x9E>":161,"<0x9F>":162,"<0xA0>":163,"<0xA1>":164,")json"
    R"json(<0xA2>":165,"<0xA3>":166,"<0xA4>":167,"<0xA5>":168,"<0xA6>":169,"<0xA7>":170,"<0xA8>":171,"<0xA9>":1)json"
    R"json(72,"<0xAA>":173,"<0xAB>":174,"<0xAC>":175,"<0xAD>":176,"<0xAE>":177,"<0xAF>":178,"<0xB0>":179,"<0xB1)json"
    R"json(>":180,"<0xB2>":181,"<0xB3>":182,"<0xB4>":183,"<0xB5>":184,"<0xB6>":185,"<0xB7>":186,"<0xB8>":187,"<)json"
    R"json(0xB9>":188,"<0xBA>":189,"<0xBB>":190,"<0xBC>":191,"<0xBD>":192,"<0xBE>":193,"<0xBF>":194,"<0xC0>":19)json"
    R"json(5,"<0xC1>":196,"<0xC2>":197,"<0xC3>":198,"<0xC4>":199,"<0xC5>":200,"<0xC6>":201,"<0xC7>":202,"<0xC8>)json"
    R"json(":203,"<0xC9>":204,"<0xCA>":205,"<0xCB>":206,"<0xCC>":207,"<0xCD>":208,"<0xCE>":209,"<0xCF>":210,"<0)json"
    R"json(xD0>":211,"<0xD1>":212,"<0xD2>":213,"<0xD3>":214,"<0xD4>":215,"<0xD5>":216,"<0xD6>":217,"<0xD7>":218)json"
    R"json(,"<0xD8>":219,"<0xD9>":220,"<0xDA>":221,"<0xDB>":222,"<0xDC>":223,"<0xDD>":224,"<0xDE>":225,"<0xDF>")json"
    R"json(:226,"<0xE0>":227,"<0xE1>":228,"<0xE2>":229,"<0xE3>":230,"<0xE4>":231,"<0xE5>":232,"<0xE6>":233,"<0x)json"
    R"json(E7>":234,"<0xE8>":235,"<0xE9>":236,"<0xEA>":237,"<0xEB>":238,"<0xEC>":239,"<0xED>":240,"<0xEE>":241,)json"
    R"json("<0xEF>":242,"<0xF0>":243,"<0xF1>":244,"<0xF2>":245,"<0xF3>":246,"<0xF4>":247,"<0xF5>":248,"<0xF6>":)json"
    R"json(249,"<0xF7>":250,"<0xF8>":251,"<0xF9>":252,"<0xFA>":253,"<0xFB>":254,"<0xFC>":255,"<0xFD>":256,"<0xF)json"
    R"json(E>":257,"<0xFF>":258,"▁":259,"h":260,"e":261,"l":262,"o":263,"w":264,"r":265,"d":266,"x":267,"y":268)json"
    R"json(,"▁h":269,"▁he":270,"ll":271,"llo":272,"▁hello":273,"▁w":274,"or":275,"▁wor":276,"ld":277,"▁world":2)json"
    R"json(78,"[MASK]":279},"merges":[["▁","h"],["▁h","e"],["l","l"],["ll","o"],["▁he","llo"],["▁","w"],["o","r)json"
    R"json("],["▁w","or"],["l","d"],["▁wor","ld"]]}})json";

const char* kTokenizerB =
    R"json({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":262,"content":"<eos>","singl)json"
    R"json(e_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":263,"content":")json"
    R"json(TOK","single_word":false,"lstrip":false,"rstrip":true,"normalized":true,"special":false}],"normalize)json"
    R"json(r":{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Lowercase"},{"type":"Strip","strip_lef)json"
    R"json(t":true,"strip_right":true}]},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","p)json"
    R"json(attern":{"String":"-"},"behavior":"MergedWithPrevious","invert":false},{"type":"Split","pattern":{"R)json"
    R"json(egex":"\\s+"},"behavior":"MergedWithNext","invert":false},{"type":"Split","pattern":{"Regex":"[xyz]+)json"
    R"json("},"behavior":"Removed","invert":false},{"type":"Digits","individual_digits":false},{"type":"Split",)json"
    R"json("pattern":{"Regex":"q"},"behavior":"Contiguous","invert":true},{"type":"ByteLevel","add_prefix_space)json"
    R"json(":true,"trim_offsets":true,"use_regex":true}]},"post_processor":{"type":"Sequence","processors":[{"t)json"
    R"json(ype":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},{"type":"TemplateProc)json"
    R"json(essing","single":[{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"<eos>","type_id":0}}],")json"
    R"json(pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{"<)json"
    R"json(eos>":{"id":"<eos>","ids":[262],"tokens":["<eos>"]}}}]},"decoder":{"type":"ByteLevel","add_prefix_sp)json"
    R"json(ace":true,"trim_offsets":true,"use_regex":true},"model":{"type":"BPE","dropout":null,"unk_token":nul)json"
    R"json(l,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,)json"
    R"json("ignore_merges":true,"vocab":{"0":48,"1":49,"2":50,"3":51,"4":52,"5":53,"6":54,"7":55,"8":56,"9":57,)json"
    R"json("12":259,"Ā":0,"ā":1,"Ă":2,"ă":3,"Ą":4,"ą":5,"Ć":6,"ć":7,"Ĉ":8,"ĉ":9,"Ċ":10,"ċ":11,"Č":12,"č":13,"Ď")json"
    R"json(:14,"ď":15,"Đ":16,"đ":17,"Ē":18,"ē":19,"Ĕ":20,"ĕ":21,"Ė":22,"ė":23,"Ę":24,"ę":25,"Ě":26,"ě":27,"Ĝ":2)json"
    R"json(8,"ĝ":29,"Ğ":30,"ğ":31,"Ġ":32,"!":33,"\"":34,"#":35,"$":36,"%":37,"&":38,"'":39,"(":40,")":41,"*":42)json"
    R"json(,"+":43,",":44,"-":45,".":46,"/":47,":":58,";":59,"<":60,"=":61,">":62,"?":63,"@":64,"A":65,"B":66,")json"
    R"json(C":67,"D":68,"E":69,"F":70,"G":71,"H":72,"I":73,"J":74,"K":75,"L":76,"M":77,"N":78,"O":79,"P":80,"Q")json"
    R"json(:81,"R":82,"S":83,"T":84,"U":85,"V":86,"W":87,"X":88,"Y":89,"Z":90,"[":91,"\\":92,"]":93,"^":94,"_":)json"
    R"json(95,"`":96,"a":97,"b":98,"c":99,"d":100,"e":101,"f":102,"g":103,"h":104,"i":105,"j":106,"k":107,"l":1)json"
    R"json(08,"m":109,"n":110,"o":111,"p":112,"q":113,"r":114,"s":115,"t":116,"u":117,"v":118,"w":119,"x":120,")json"
    R"json(y":121,"z":122,"{":123,"|":124,"}":125,"~":126,"ġ":127,"Ģ":128,"ģ":129,"Ĥ":130,"ĥ":131,"Ħ":132,"ħ":1)json"
    R"json(33,"Ĩ":134,"ĩ":135,"Ī":136,"ī":137,"Ĭ":138,"ĭ":139,"Į":140,"į":141,"İ":142,"ı":143,"Ĳ":144,"ĳ":145,")json"
    R"json(Ĵ":146,"ĵ":147,"Ķ":148,"ķ":149,"ĸ":150,"Ĺ":151,"ĺ":152,"Ļ":153,"ļ":154,"Ľ":155,"ľ":156,"Ŀ":157,"ŀ":1)json"
    R"json(58,"Ł":159,"ł":160,"¡":161,"¢":162,"£":163,"¤":164,"¥":165,"¦":166,"§":167,"¨":168,"©":169,"ª":170,")json"
    R"json(«":171,"¬":172,"Ń":173,"®":174,"¯":175,"°":176,"±":177,"²":178,"³":179,"´":180,"µ":181,"¶":182,"·":1)json"
    R"json(83,"¸":184,"¹":185,"º":186,"»":187,"¼":188,"½":189,"¾":190,"¿":191,"À":192,"Á":193,"Â":194,"Ã":195,")json"
    R"json(Ä":196,"Å":197,"Æ":198,"Ç":199,"È":200,"É":201,"Ê":202,"Ë":203,"Ì":204,"Í":205,"Î":206,"Ï":207,"Ð":2)json"
    R"json(08,"Ñ":209,"Ò":210,"Ó":211,"Ô":212,"Õ":213,"Ö":214,"×":215,"Ø":216,"Ù":217,"Ú":218,"Û":219,"Ü":220,")json"
    R"json(Ý":221,"Þ":222,"ß":223,"à":224,"á":225,"â":226,"ã":227,"ä":228,"å":229,"æ":230,"ç":231,"è":232,"é":2)json"
    R"json(33,"ê":234,"ë":235,"ì":236,"í":237,"î":238,"ï":239,"ð":240,"ñ":241,"ò":242,"ó":243,"ô":244,"õ":245,")json"
    R"json(ö":246,"÷":247,"ø":248,"ù":249,"ú":250,"û":251,"ü":252,"ý":253,"þ":254,"ÿ":255,"ab":256,"Ġa":257,"Ġa)json"
    R"json(b":258,"cd":260,"abcd":261},"merges":["a b","Ġ a","Ġa b","1 2","c d"]}})json";

std::unique_ptr<dsft::text::Tokenizer> load_json_text(const std::string& name, const char* json) {
  auto dir = std::filesystem::temp_directory_path() / ("dsft_tokenizer_pipeline_" + name);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << json;
  auto tok = dsft::text::load_tokenizer(dir.string());
  std::filesystem::remove_all(dir);
  return tok;
}

struct Expect {
  std::string text;
  std::vector<int32_t> ids, ids_special;
  std::string decoded, decoded_skip_special;
};

void check(const dsft::text::Tokenizer& tok, const std::vector<Expect>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE("text \"" + c.text + "\"");
    auto ids = tok.encode(c.text, false);
    auto ids_special = tok.encode(c.text, true);
    EXPECT_EQ(ids, c.ids);
    EXPECT_EQ(ids_special, c.ids_special);
    EXPECT_EQ(tok.decode(ids, false), c.decoded);
    EXPECT_EQ(tok.decode(ids_special, true), c.decoded_skip_special);
  }
}

TEST(TokenizerPipeline, SentencePieceStyleBpeMatchesReference) {
  auto tok = load_json_text("a", kTokenizerA);
  check(*tok, {
      {"hello world", {273, 278}, {1, 273, 278}, "hello world", "hello world"},
      {"Hello", {259, 75, 261, 272}, {1, 259, 75, 261, 272}, "Hello", "Hello"},
      {"héllo wörld", {269, 198, 172, 272, 274, 198, 185, 265, 277}, {1, 269, 198, 172, 272, 274, 198, 185, 265, 277}, "héllo wörld", "héllo wörld"},
      {"hello [MASK] world", {273, 279, 259, 278}, {1, 273, 279, 259, 278}, "hello[MASK]  world", "hello[MASK]  world"},
      {"x[MASK]y", {259, 267, 94, 80, 68, 86, 78, 96, 268}, {1, 259, 267, 94, 80, 68, 86, 78, 96, 268}, "x[MASK]y", "x[MASK]y"},
      {"hello  [MASK]", {273, 279}, {1, 273, 279}, "hello[MASK]", "hello[MASK]"},
      {"", {}, {1}, "", ""},
      {"  ", {259, 259, 259}, {1, 259, 259, 259}, "  ", "  "},
      {"xyzzy hello", {259, 267, 268, 125, 125, 268, 273}, {1, 259, 267, 268, 125, 125, 268, 273}, "xyzzy hello", "xyzzy hello"},
  });
  EXPECT_EQ(tok->vocab_size(), 280);
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_FALSE(tok->is_special(279));
  EXPECT_EQ(tok->token_to_id("[MASK]"), 279);
  EXPECT_EQ(tok->id_to_token(273), "\u2581hello");
}

TEST(TokenizerPipeline, ByteLevelWithSplitBehavioursMatchesReference) {
  auto tok = load_json_text("b", kTokenizerB);
  check(*tok, {
      {"ab-cd ab", {258, 45, 32, 260, 258}, {258, 45, 32, 260, 258, 262}, " ab- cd ab", " ab- cd ab"},
      {"ＡＢ12345 abcd", {258, 32, 259, 51, 52, 53, 32, 256, 260}, {258, 32, 259, 51, 52, 53, 32, 256, 260, 262}, " ab 12345 abcd", " ab 12345 abcd"},
      {"  ab  cd  ", {258, 32, 32, 260}, {258, 32, 32, 260, 262}, " ab  cd", " ab  cd"},
      {"xaxbycz", {257, 32, 98, 32, 99}, {257, 32, 98, 32, 99, 262}, " a b c", " a b c"},
      {"abqqcdqab", {258, 32, 113, 113, 32, 260, 32, 113, 258}, {258, 32, 113, 113, 32, 260, 32, 113, 258, 262}, " ab qq cd q ab", " ab qq cd q ab"},
      {"a-b--c", {257, 45, 32, 98, 45, 32, 45, 32, 99}, {257, 45, 32, 98, 45, 32, 45, 32, 99, 262}, " a- b- - c", " a- b- - c"},
      {"TOK  ab tok ab", {263, 258, 32, 263, 258}, {263, 258, 32, 263, 258, 262}, "tok ab tok ab", "tok ab tok ab"},
      {"ab<eos>ab", {258, 262, 258}, {258, 262, 258, 262}, " ab<eos> ab", " ab ab"},
      {"Ⅻ½ ab", {32, 105, 105, 32, 49, 32, 226, 129, 132, 32, 50, 258}, {32, 105, 105, 32, 49, 32, 226, 129, 132, 32, 50, 258, 262}, " ii 1 ⁄ 2 ab", " ii 1 ⁄ 2 ab"},
      {"İab", {32, 105, 204, 135, 256}, {32, 105, 204, 135, 256, 262}, " i̇ab", " i̇ab"},
      {"", {}, {262}, "", ""},
  });
}

// C: Metaspace pre-tokenizer and decoder with prepend_scheme "first" and an unknown token.
// D: WhitespaceSplit then Whitespace, no decoder (tokens joined with spaces).
const char* kTokenizerC =
    R"json({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":1,"content":"<s>","single_wo)json"
    R"json(rd":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_t)json"
    R"json(okenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true},"post_process)json"
    R"json(or":null,"decoder":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true},"mod)json"
    R"json(el":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_s)json"
    R"json(uffix":null,"fuse_unk":false,"byte_fallback":false,"vocab":{"1":10,"2":11,"<unk>":0,"<s>":1,"▁":2,"a)json"
    R"json(":3,"b":4,"c":5,"d":6,",":7,".":8,"!":9,"é":12,"▁a":13,"▁ab":14,"ab":15,"cd":16,"▁cd":17},"merges":[)json"
    R"json("▁ a","▁a b","a b","c d","▁ cd"]}})json";

const char* kTokenizerD =
    R"json({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":1,"content":"<s>","single_wo)json"
    R"json(rd":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_t)json"
    R"json(okenizer":{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Whitespace"}]},"po)json"
    R"json(st_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continui)json"
    R"json(ng_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"vocab":{"1)json"
    R"json(":10,"2":11,"<unk>":0,"<s>":1,"▁":2,"a":3,"b":4,"c":5,"d":6,",":7,".":8,"!":9,"é":12,"▁a":13,"▁ab":1)json"
    R"json(4,"ab":15,"cd":16,"▁cd":17},"merges":["▁ a","▁a b","a b","c d","▁ cd"]}})json";

struct EncodeDecode {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

void check_encode_decode(const dsft::text::Tokenizer& tok, const std::vector<EncodeDecode>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE("text \"" + c.text + "\"");
    auto ids = tok.encode(c.text, false);
    EXPECT_EQ(ids, c.ids);
    EXPECT_EQ(tok.decode(ids, false), c.decoded);
  }
}

TEST(TokenizerPipeline, MetaspaceFirstMatchesReference) {
  auto tok = load_json_text("c", kTokenizerC);
  check_encode_decode(*tok, {
      {"ab cd", {14, 17}, "ab cd"},
      {" ab  cd", {14, 2, 17}, "ab  cd"},
      {"ab<s> cd", {14, 1, 17}, "ab<s> cd"},
      {"<s>ab cd", {1, 15, 17}, "<s>ab cd"},
      {"ab,cd! 12 é", {14, 7, 16, 9, 2, 10, 11, 2, 12}, "ab,cd! 12 é"},
      {"x y", {2, 0, 2, 0}, "<unk> <unk>"},
      {"  ", {2, 2}, " "},
      {"", {}, ""},
  });
}

TEST(TokenizerPipeline, WhitespacePreTokenizersMatchReference) {
  auto tok = load_json_text("d", kTokenizerD);
  check_encode_decode(*tok, {
      {"ab cd", {15, 16}, "ab cd"},
      {" ab  cd", {15, 16}, "ab cd"},
      {"ab<s> cd", {15, 1, 16}, "ab <s> cd"},
      {"<s>ab cd", {1, 15, 16}, "<s> ab cd"},
      {"ab,cd! 12 é", {15, 7, 16, 9, 10, 11, 12}, "ab , cd ! 1 2 é"},
      {"x y", {0, 0}, "<unk> <unk>"},
      {"  ", {}, ""},
      {"", {}, ""},
  });
}

}  // namespace
