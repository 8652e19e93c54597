// islrun's own test script (not from the field): the reply idioms public scripts use.
// GetRxMsg then @RxMsg and Split on one |-separated field; WaitForRxMsg then a handler that
// reads @RxMsg; check information lines cut to 24; a discount key always followed by
// @KEY_ENTER; a named inquiry constant; events for a cancelled check and a changed detail.
RetainGlobalVar
UseISLTimeOuts

const INQ_CARD : N3 = 7
var gMember : A20
var gBalance : $10
var gReleased : N3

Event Inq : INQ_CARD
    var card : A32
    var status : A20
    var line : A24
    Input card, "Card?"
    TxMsg "IDENT|" + card
    GetRxMsg "Waiting for loyalty"
    If @RxMsg = "_timeout"
        ErrorMessage "Loyalty offline"
        ExitContinue
    EndIf
    Split @RxMsg, "|", status, gMember, gBalance
    If status <> "OK"
        ErrorMessage "Refused: ", status
        ExitCancel
    EndIf
    ClearChkInfo
    Format line As "Member ", gMember
    SaveChkInfo line
    Format line As "Balance ", gBalance
    SaveChkInfo line
    LoadKybdMacro Key(5, 101), MakeKeys("1.00"), @KEY_ENTER
EndEvent

Event Inq : 2
    TxMsg "PING"
    WaitForRxMsg
EndEvent

Event RxMsg : PONG
    var state : A20
    var version : A10
    Split @RxMsg, "|", state, state, version
    InfoMessage "Gateway", version
EndEvent

Event RxMsg : _TIMEOUT
    InfoMessage "Loyalty offline"
EndEvent

Event Trans_Cncl
    If gMember <> ""
        TxMsg "RELEASE", gMember
        gReleased = gReleased + 1
    EndIf
    gMember = ""
EndEvent

Event Dtl_Changed
    var i : N3
    For i = 1 To @NUMDTLT
        If @DTL_TYPE[i] = "D" And @DTL_IS_VOID[i] = 1
            InfoMessage "Voided discount", @DTL_OBJECT[i]
        EndIf
    EndFor
EndEvent

Event Final_Tender
    StartPrint @RCPT
        PrintLine "Member ", gMember
        PrintLine "Points"{<10}, 15{>6}
    EndPrint
    ClearChkInfo
EndEvent
