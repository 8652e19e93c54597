// islrun's own test script: file statements as public scripts write them (a log appended to,
// a comma-separated file read back until Feof).
Event Inq : 1
    var fn : N6
    var code : A10
    var name : A20
    var qty : N5
    var line : A80
    FOpen fn, "..\etc\loyalty\log.txt", append
    If fn = 0
        ExitWithError "cannot open the log"
    EndIf
    FWriteLn fn, "check ", @CKNUM, " ws ", @WSID
    FWrite fn, "A1", "Latte", 2
    FWrite fn, "B2", "Bagel", 1
    FClose fn
    FOpen fn, "..\etc\loyalty\log.txt", read
    FReadLn fn, line
    InfoMessage line
    FRead fn, code, name, qty
    While Not Feof(fn)
        InfoMessage code, name, qty
        FRead fn, code, name, qty
    EndWhile
    FClose fn
    FOpen fn, "..\etc\missing.txt", read
    InfoMessage "missing", fn, @FILE_ERRNO
EndEvent
