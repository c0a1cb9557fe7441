# The optional N-API backend. Built by `npm run build:native` (native/build.mjs), never by npm install:
# package.json sets "gypfile": false so a missing compiler cannot fail an install (TOOLCHAIN.md, gotcha 3).
#
# Floating point must give the same bits as the JS reference and the wasm module (rendezvous scores,
# jump hash, bounded-load ceilings): -ffp-contract=off forbids fused multiply-add contraction (GCC
# contracts by default outside ISO mode, clang within expressions, and aarch64 has FMA in its base ISA);
# no -ffast-math; MSVC 2022 contracts only under /fp:contract, never under plain /fp:precise; and SSE2
# arithmetic on 32-bit x86 instead of x87's 80-bit registers.
{
  "targets": [
    {
      "target_name": "dystro",
      "sources": ["kernels.cc", "prefix_index.cc", "addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-O3", "-ffp-contract=off", "-fno-fast-math"],
      "cflags_cc": ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-exceptions"],
      "conditions": [
        ["target_arch=='ia32'", {
          "cflags": ["-msse2", "-mfpmath=sse"],
          "cflags_cc": ["-msse2", "-mfpmath=sse"]
        }],
        ["OS=='mac'", {
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "GCC_ENABLE_CPP_EXCEPTIONS": "NO",
            "GCC_OPTIMIZATION_LEVEL": "3",
            "OTHER_CFLAGS": ["-ffp-contract=off", "-fno-fast-math"],
            "OTHER_CPLUSPLUSFLAGS": ["-ffp-contract=off", "-fno-fast-math"],
            "MACOSX_DEPLOYMENT_TARGET": "10.15"
          }
        }],
        ["OS=='win'", {
          "msvs_settings": {
            "VCCLCompilerTool": {
              "ExceptionHandling": 0,
              "AdditionalOptions": ["/std:c++17", "/O2", "/fp:precise"]
            }
          }
        }]
      ]
    }
  ]
}
