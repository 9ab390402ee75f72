"""RFC 9235's TCP-AO test vectors, as data: packets from each of its eight scenarios
(sections 4.1-7.2: HMAC-SHA-1-96 and AES-128-CMAC-96, options covered and excluded,
IPv4 and IPv6).

Master key "testvector"; the client 10.11.12.13 / fd00::1 sends with KeyID 61
(0x3d) and the server 172.27.28.29 / fd00::2 with 84 (0x54). Each packet: who
sent it ("client" or "server"), the whole IP packet, the traffic key the sender
used (for a SYN its Send_SYN_traffic_key, otherwise the other-traffic key of its
direction) and the MAC the packet carries.
"""

from __future__ import annotations

from typing import NamedTuple

MASTER_KEY = b"testvector"
CLIENT_KEYID = 61
SERVER_KEYID = 84


class Packet(NamedTuple):
    sender: str
    hexdump: str
    traffic_key: str
    mac: str


class Scenario(NamedTuple):
    section: str
    algorithm: str
    include_options: bool
    client_isn: int
    server_isn: int
    packets: tuple[Packet, ...]


SCENARIOS = (
    Scenario("4.1", "hmac-sha1", True, 0xFBFBAB5A, 0x11C14261, (
        Packet("client",
               "45e0004cdd0f4000ff06bf6b0a0b0c0dac1b1c1de9d700b3fbfbab5a00000000"
               "e002ffffcac40000020405b4010303080402080a00155ab7000000001d103d54"
               "2ee437c6f8ede6d7c4d602e7",
               "6d63ef1b02fe1509d4b1402707fd7b0416abb74f", "2ee437c6f8ede6d7c4d602e7"),
        Packet("server",
               "45e0004c65064000ff063775ac1b1c1d0a0b0c0d00b3e9d711c14261fbfbab5b"
               "e012ffff37760000020405b4010303080402080a84a50beb00155ab71d10543d"
               "eeab0fe24c3010815116b3be",
               "d9e217e4834a80ca2f3fd8de2e41b8e6797fea96", "eeab0fe24c3010815116b3be"),
        Packet("client",
               "45e0008736a14000ff06659f0a0b0c0dac1b1c1de9d700b3fbfbab5b11c14262"
               "c0180104a16200000101080a00155ac184a50beb1d103d547064cf998cc6c315"
               "c2c2e2bfffffffffffffffffffffffffffffffff00430104dabf00b40a0b0c0d"
               "260206010400010001020280000202020002024200020641040000dabf020840"
               "06006400010100",
               "d2e59c65ffc7b1a393476564 63b70edc24a13d71".replace(" ", ""),
               "7064cf998cc6c315c2c2e2bf"),
        Packet("server",
               "45e000871fa94000ff067c97ac1b1c1d0a0b0c0d00b3e9d711c14262fbfbab9e"
               "c0180100400c00000101080a84a50bf500155ac11d10543da63f0ecbbb2e635c"
               "954deac7ffffffffffffffffffffffffffffffff00430104dac000b4ac1b1c1d"
               "260206010400010001020280000202020002024200020641040000dac0020840"
               "06006400010100",
               "d9e217e4834a80ca2f3fd8de2e41b8e6797fea96", "a63f0ecbbb2e635c954deac7"),
    )),
    Scenario("4.2", "hmac-sha1", False, 0xCB0EFBEE, 0xACD5B5E1, (
        Packet("client",
               "45e0004c53994000ff0648e20a0b0c0dac1b1c1dff1200b3cb0efbee00000000"
               "e002ffff541f0000020405b4010303080402080a00024cce000000001d103d54"
               "80af3cfeb85368937b8f9ec2",
               "30eaa1560cf0be57dab5c045229fb10a423cd7ea", "80af3cfeb85368937b8f9ec2"),
        Packet("client",
               "45e00087a8f54000ff06f34a0a0b0c0dac1b1c1dff1200b3cb0efbefacd5b5e2"
               "c01801046c4500000101080a00024cce576772f31d103d54710608cc696c03a2"
               "71c93aa5ffffffffffffffffffffffffffffffff00430104dabf00b40a0b0c0d"
               "260206010400010001020280000202020002024200020641040000dabf020840"
               "06006400010100",
               "f3db1793d7910ecd806c34f155ea1f00345953e3", "710608cc696c03a271c93aa5"),
    )),
    Scenario("5.1", "aes-128-cmac", True, 0x787A1DDF, 0xFADD6DE9, (
        Packet("client",
               "45e0004c7b9f4000ff0620dc0a0b0c0dac1b1c1dc4fa00b3787a1ddf00000000"
               "e002ffff5a0f0000020405b4010303080402080a00017ed0000000001d103d54"
               "e477e99c8040765498e55091",
               "f5b8b3d5f34fdbb6eb8d4ab9660e60e3", "e477e99c8040765498e55091"),
        Packet("server",
               "45e0004c4bad4000ff0650ceac1b1c1d0a0b0c0d00b3c4fafadd6de9787a1de0"
               "e012fffff3f20000020405b4010303080402080a93f4e9e800017ed01d10543d"
               "d6ada7bc4cdd536d1769db5f",
               "4bc7571a486f3264bbd888474066b4b1", "d6ada7bc4cdd536d1769db5f"),
    )),
    Scenario("5.2", "aes-128-cmac", False, 0x389BED71, 0xD3844A6F, (
        Packet("client",
               "45e0004cf22e4000ff06aa4c0a0b0c0dac1b1c1dda1c00b3389bed7100000000"
               "e002ffff70bf0000020405b4010303080402080a000185e1000000001d103d54"
               "c44e60cb31f7c0b1de3d2749",
               "2cdbae1392c49449fa92c4509735d50e", "c44e60cb31f7c0b1de3d2749"),
        Packet("server",
               "45e0004c6cc04000ff062fbbac1b1c1d0a0b0c0d00b3da1cd3844a6f389bed72"
               "e012ffffe4450000020405b4010303080402080ace459838000185e11d10543d"
               "3a6abb207e49b1be7136db90",
               "3ce67a551869506b6347b633c50a624a", "3a6abb207e49b1be7136db90"),
        Packet("client",
               "45e00087ee914000ff06adae0a0b0c0dac1b1c1dda1c00b3389bed72d3844a70"
               "c018010488510000 0101080a000185e1ce4598381d103d547585e9e9d5c3ec85".replace(" ", "")
               + "7b96f837ffffffffffffffffffffffffffffffff00430104dabf00b40a0b0c0d"
               "260206010400010001020280000202020002024200020641040000dabf020840"
               "06006400010100",
               "035bc400a341ffe595f59f58005006ca", "7585e9e9d5c3ec857b96f837"),
        Packet("server",
               "45e000876a214000ff06321fac1b1c1d0a0b0c0d00b3da1cd3844a70389bed72"
               "c018010004490000 0101080ace459838000185e11d10543d5c040fd923330476".replace(" ", "")
               + "5c0982f4ffffffffffffffffffffffffffffffff00430104dac000b4ac1b1c1d"
               "260206010400010001020280000202020002024200020641040000dac0020840"
               "06006400010100",
               "3ce67a551869506b6347b633c50a624a", "5c040fd9233304765c0982f4"),
    )),
    Scenario("6.1", "hmac-sha1", True, 0x176A833F, 0x3F51994B, (
        Packet("client",
               "6e0891dc00380640fd000000000000000000000000000001fd00000000000000"
               "0000000000000002f7e400b3176a833f00000000e002ffff47210000020405a0"
               "010303080402080a0041d087000000001d103d549033ec3d7334b64c5edd039f",
               "625ec09d575836edc9b6428418bbf06989a361bb", "9033ec3d7334b64c5edd039f"),
        Packet("client",
               "6e0891dc00730640fd000000000000000000000000000001fd00000000000000"
               "0000000000000002f7e400b3176a83403f51994cc0180100329c00000101080a"
               "0041d091bd33129b1d103d54bf0805feb4ac7b163d6fcdf2ffffffffffffffff"
               "ffffffffffffffff00430104fde800b401010179260206010400010001020280"
               "000202020002024200020641040000fde8020840060064000101 00".replace(" ", ""),
               "1ed82975f4ea444c61580c5bd90dbd61bbc91b7e", "bf0805feb4ac7b163d6fcdf2"),
    )),
    Scenario("6.2", "hmac-sha1", False, 0x020C1E69, 0xEBA3734D, (
        Packet("client",
               "6e078fcd00380640fd000000000000000000000000000001fd00000000000000"
               "0000000000000002c6cd00b3020c1e6900000000e002ffffa41a0000020405a0"
               "010303080402080a009db95b000000001d103d54885698b0530ed4d5a15f8346",
               "31a3faf69effae52931b7f845467315c270a4edc", "885698b0530ed4d5a15f8346"),
    )),
    Scenario("7.1", "aes-128-cmac", True, 0x193CCCEC, 0xA6744ECB, (
        Packet("client",
               "6e04a70600380640fd000000000000000000000000000001fd00000000000000"
               "0000000000000002f85a00b3193cccec00000000e002ffffde5d0000020405a0"
               "010303080402080a13e4ab99000000001d103d5459b588107481ac6dc3927040",
               "fa5a2108882d39d0c71929175ab1b7b8", "59b588107481ac6dc3927040"),
        Packet("client",
               "6e04a70600730640fd000000000000000000000000000001fd00000000000000"
               "0000000000000002f85a00b3193ccceda6744eccc018010032800000 0101080a".replace(" ", "")
               + "13e4aba371daabc81d103d547b6a455c0d4f5f01835baab3ffffffffffffffff"
               "ffffffffffffffff00430104fde800b401010179260206010400010001020280"
               "000202020002024200020641040000fde802084006006400010100",
               "6174c3557abed27574dba37185f00300", "7b6a455c0d4f5f01835baab3"),
    )),
    Scenario("7.2", "aes-128-cmac", False, 0xB01DA74A, 0xA6246145, (
        Packet("client",
               "6e093d7600380640fd000000000000000000000000000001fd00000000000000"
               "0000000000000002f28800b3b01da74a00000000e002ffff75ff0000020405a0"
               "010303080402080a14275b3b000000001d103d543d45b4342de8bb1530847898",
               "a94f511263e4093d35dd818c13bbbf53", "3d45b4342de8bb1530847898"),
        Packet("server",
               "6e0c600a00380640fd000000000000000000000000000002fd00000000000000"
               "0000000000000001 00b3f288a6246145b01da74be012ffffa70c0000020405a0".replace(" ", "")
               + "010303080402080a1782245b14275b3b1d10543d1d01f6c87c6f93acffa9d4b5",
               "92dea5bbc78b1d9f5b2952e9cd30642a", "1d01f6c87c6f93acffa9d4b5"),
    )),
)
