<?php
// Regenerates sanctum.json with PHP's own hash() and json_encode(), the functions
// Laravel Sanctum 4.x uses: php8.2 tests/unit/vectors/sanctum.php > tests/unit/vectors/sanctum.json
$entropies = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN",
    "0000000000000000000000000000000000000000",
    "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0PpOoNnMmLl",
    "kQ3vB8nR2xT7wP1mL6cY4hJ9dF5gS0aZeUoIiKqW",
];
$tokens = [];
foreach ($entropies as $i => $e) {
    $prefix = $i === 3 ? "acme_" : "";
    $plain = $prefix . $e . hash('crc32b', $e);
    $tokens[] = ["entropy" => $e, "prefix" => $prefix, "crc32b" => hash('crc32b', $e),
                 "plain" => $plain, "sha256" => hash('sha256', $plain)];
}
// Legacy shapes: 80 random characters (before 2.6), 40 without checksum (2.6 to 3.2.5).
$legacy = [];
foreach (["legacy40xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", str_repeat("L8", 40)] as $p) {
    $legacy[] = ["plain" => $p, "sha256" => hash('sha256', $p)];
}
$abilities = [
    [["*"], json_encode(["*"])],
    [["read", "server:update"], json_encode(["read", "server:update"])],
    [["files/read", "ümlaut"], json_encode(["files/read", "ümlaut"])],
    [[], json_encode([])],
];
echo json_encode(["tokens" => $tokens, "legacy" => $legacy, "abilities" => $abilities],
                 JSON_PRETTY_PRINT | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES), "\n";
